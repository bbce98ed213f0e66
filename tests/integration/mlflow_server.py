"""A real `mlflow server` (SQLite backend store in a temp dir), started once per test session.

Start-up costs ~25 s (uvicorn imports mlflow), so the server is session-scoped and every test
registers models under its own unique name. Set-up talks plain REST through httpx, as the
product does: importing the `mlflow` client here would drag its import-time warnings into a
test run that turns warnings into errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlwarden.streams.processes import start_process_group, stop_process_group

_READY_TIMEOUT_S = 120.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class MlflowServer:
    url: str

    @property
    def api(self) -> str:
        return f"{self.url}/api/2.0/mlflow"

    def post(self, endpoint: str, body: dict[str, object]) -> dict[str, object]:
        response = httpx.post(f"{self.api}/{endpoint}", json=body, timeout=30)
        response.raise_for_status()
        reply: dict[str, object] = response.json()
        return reply

    def register(self, versions: int = 3, alias: str = "champion") -> str:
        """A new registered model with `versions` versions and `alias` on the newest one."""
        name = f"model-{uuid.uuid4().hex[:10]}"
        self.post("registered-models/create", {"name": name})
        for number in range(1, versions + 1):
            self.post("model-versions/create", {"name": name, "source": f"s3://m/{name}/{number}"})
        self.set_alias(name, alias, versions)
        return name

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.post(
            "registered-models/alias", {"name": name, "alias": alias, "version": str(version)}
        )

    def alias(self, name: str, alias: str = "champion") -> str:
        response = httpx.get(
            f"{self.api}/registered-models/alias", params={"name": name, "alias": alias}, timeout=30
        )
        response.raise_for_status()
        return str(response.json()["model_version"]["version"])

    def tags(self, name: str) -> dict[str, str]:
        response = httpx.get(f"{self.api}/registered-models/get", params={"name": name}, timeout=30)
        response.raise_for_status()
        entries = response.json()["registered_model"].get("tags", [])
        return {entry["key"]: entry["value"] for entry in entries}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port, in its own process group, torn down at the end."""
    root: Path = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log_path = root / "mlflow.log"
    with log_path.open("ab") as log:
        # MLFLOW_* from the developer's shell (a tracking URI, auth) must not leak in.
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
        process = start_process_group(command, env=env, log=log)
    server = MlflowServer(f"http://127.0.0.1:{port}")
    try:
        _wait_ready(server, process, log_path)
        yield server
    finally:
        stop_process_group(process, timeout_s=15)


def _wait_ready(server: MlflowServer, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    tail = log_path.read_text(errors="replace")[-3000:]
    state = "exited" if process.poll() is not None else f"not ready in {_READY_TIMEOUT_S:.0f}s"
    raise RuntimeError(f"mlflow server (pid {process.pid}) {state}:\n{tail}")
