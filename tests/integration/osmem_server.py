"""A real Elasticsearch-compatible server for the evidence tests: the osmem-server binary.

osmem is an in-memory OpenSearch-compatible server shipped as a wheel (no JVM, starts in well
under a second). It answers the Elasticsearch APIs evidence uses — bulk, search, templates —
but not ILM or data streams, and it refuses elasticsearch-py 9's `compatible-with=9` media
type, so tests use `plain_json_media_type`, a plain index and no ILM (`evidence_settings`).

`OsmemProcess` runs it as its own process group on a fixed free port, so a test can stop it
(Elasticsearch away) and start it again on the same address. The `osmem` fixture is one
server per session; import it into a test module to use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from mlwarden.responders.evidence.settings import EvidenceBackend, EvidenceSettings
from mlwarden.streams.broker import free_port
from mlwarden.streams.processes import start_process_group, stop_process_group

_READY_TIMEOUT_S = 20.0


def osmem_binary() -> str:
    from osmem_server import resolve_binary

    return resolve_binary()


class OsmemProcess:
    """osmem-server on 127.0.0.1:`port`; `start()` again after `stop()` reuses the port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        handle, name = tempfile.mkstemp(prefix="mlwarden-osmem-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> OsmemProcess:
        self._log = self.log_path.open("ab")
        command = [
            osmem_binary(),
            "--addr",
            f"127.0.0.1:{self.port}",
            "--no-ja",
            "--no-stdin-watch",
            "--parent-pid",
            str(os.getpid()),
        ]
        process = start_process_group(command, env=dict(os.environ), log=self._log)
        self._process = process
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"osmem-server exited: {self.log_path.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url, timeout=0.5) as response,
            ):
                json.load(response)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"osmem-server did not answer on {self.url}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process, timeout_s=5.0)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture(scope="session")
def osmem() -> Iterator[OsmemProcess]:
    server = OsmemProcess().start()
    yield server
    server.stop()


def evidence_settings(url: str, spool_dir: Path) -> EvidenceSettings:
    """Settings for osmem: plain JSON, a plain index of its own per test, no ILM."""
    return EvidenceSettings(
        backend=EvidenceBackend.ELASTICSEARCH,
        elasticsearch_url=url,
        plain_json_media_type=True,
        use_data_stream=False,
        install_ilm=False,
        data_stream=f"logs-mlwarden.evidence-t{uuid.uuid4().hex[:12]}",
        spool_dir=spool_dir,
        request_timeout_s=5.0,
    )
