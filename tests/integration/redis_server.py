"""A real `redis-server` (Debian's) on a free loopback port, in its own process group.

`redis_server` is session-scoped: tests share it and keep apart by key prefix. Tests that take
Redis down start their own with `running_redis(port)` (the same port again brings it back),
since Redis starts in milliseconds.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlwarden.streams.broker import free_port
from mlwarden.streams.processes import start_process_group, stop_process_group

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass(frozen=True)
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _wait_until_listening(port: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on {port} in {timeout_s}s:\n{log.read_text()}")


@contextmanager
def running_redis(port: int | None = None, log_dir: Path | None = None) -> Iterator[RedisServer]:
    """redis-server without persistence, stopped (SIGTERM, then SIGKILL) on exit."""
    if not Path(REDIS_BIN).exists():
        pytest.fail("redis-server is not installed: apt-get install redis-server")
    port = port or free_port()
    log = (log_dir or Path("/tmp")) / f"redis-{port}.log"
    with log.open("ab") as out:
        process = start_process_group(
            [
                REDIS_BIN,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            env={},
            log=out,
        )
    try:
        _wait_until_listening(port, 10.0, log)
        yield RedisServer(port)
    finally:
        stop_process_group(process, timeout_s=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(log_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server
