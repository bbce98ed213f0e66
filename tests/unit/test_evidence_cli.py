"""`mlwarden evidence` on the embedded store, and setup's Kibana import against a server that
enforces the saved-objects import contract (multipart `file`, `kbn-xsrf`, `overwrite`)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.install import import_kibana_objects
from mlwarden.responders.evidence.responder import SnapshotEvidenceResponder
from mlwarden.responders.evidence.sqlite_store import SqliteEvidenceStore
from mlwarden.responders.params import SnapshotEvidenceParams
from mlwarden.streams.cli_evidence import evidence_app
from tests.unit.test_evidence_support import make_alert, make_context

runner = CliRunner()


def sqlite(path: Path) -> list[str]:
    return ["--sqlite-path", str(path)]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "evidence.sqlite3"

    async def fill() -> None:
        store = SqliteEvidenceStore(path)
        await SnapshotEvidenceResponder(store)(
            SnapshotEvidenceParams(max_records=4), make_context(make_alert(1))
        )
        await store.close()

    asyncio.run(fill())
    return path


def test_search_prints_hits_and_json(database: Path) -> None:
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "search", "event.kind:alert"]
    )
    assert result.exit_code == 0, result.output
    assert "fp-incident-1#1" in result.stdout
    result = runner.invoke(
        evidence_app,
        ["--sqlite-path", str(database), "search", "client.id:acct-1", "--json", "--limit", "2"],
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["client"]["id"] for line in lines] == ["acct-1", "acct-1"]


def test_settings_come_from_the_environment(database: Path) -> None:
    result = runner.invoke(
        evidence_app,
        ["search", "*", "--json"],
        env={"MLWARDEN_EVIDENCE__SQLITE_PATH": str(database)},
    )
    assert len(result.stdout.splitlines()) == 5


def test_a_bad_query_or_duration_exits_2_with_advice(database: Path) -> None:
    result = runner.invoke(evidence_app, ["--sqlite-path", str(database), "search", "clientid:x"])
    assert result.exit_code == 2
    assert "did you mean client.id" in result.output
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "search", "*", "--since", "2 hours"]
    )
    assert result.exit_code == 2
    assert "--since" in result.output


def test_since_accepts_durations(database: Path) -> None:
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "search", "*", "--since", "36500d", "--json"]
    )
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 5


def test_verify_exits_0_when_intact_and_1_listing_problems(database: Path) -> None:
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "verify", "fp-incident-1"]
    )
    assert result.exit_code == 0, result.output
    assert "intact" in result.stdout
    db = sqlite3.connect(database)
    db.execute("DELETE FROM evidence WHERE seq = 5")
    db.commit()
    db.close()
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "verify", "fp-incident-1"]
    )
    assert result.exit_code == 0  # the removed tail is invisible without the recorded anchor…
    tail = "5:" + "0" * 64
    result = runner.invoke(
        evidence_app, ["--sqlite-path", str(database), "verify", "fp-incident-1", "--tail", tail]
    )
    assert result.exit_code == 1  # …and caught with it
    assert "truncated: seq 5" in result.stdout


class KibanaImport(BaseHTTPRequestHandler):
    """The documented import API: POST multipart `file`, `kbn-xsrf` required."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not self.path.startswith("/api/saved_objects/_import"):
            return self._reply(404, {"message": "not found"})
        if "kbn-xsrf" not in self.headers:
            return self._reply(400, {"message": "Request must contain a kbn-xsrf header."})
        head = b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n"
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        files = [
            part
            for part in message.iter_parts()
            if part.get_param("name", header="content-disposition") == "file"
        ]
        if len(files) != 1:
            return self._reply(400, {"message": "[request body.file]: expected a file"})
        lines = files[0].get_content().splitlines()
        objects = [json.loads(line) for line in lines if line.strip()]
        auth = self.headers.get("Authorization")
        self.received.append({"query": self.path, "auth": auth, "objects": objects})
        return self._reply(200, {"success": True, "successCount": len(objects)})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kibana() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KibanaImport)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_saved_objects_import_through_the_documented_api(kibana: str) -> None:
    KibanaImport.received.clear()
    count = await import_kibana_objects(kibana, SecretStr("a2V5"))
    assert count == 7
    [request] = KibanaImport.received
    assert "overwrite=true" in request["query"]
    assert request["auth"] == "ApiKey a2V5"
    assert {o["id"] for o in request["objects"]} >= {
        "mlwarden-evidence",
        "mlwarden-evidence-oncall",
    }
    with pytest.raises(EvidenceStoreError, match="Kibana refused"):
        await import_kibana_objects(kibana + "/wrong-base")
