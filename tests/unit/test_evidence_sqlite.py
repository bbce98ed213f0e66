"""The embedded SQLite store and the snapshot responder on it: write, search, verify, replay."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mlwarden.responders.base import Responder
from mlwarden.responders.evidence.query import parse_query
from mlwarden.responders.evidence.responder import SnapshotEvidenceResponder
from mlwarden.responders.evidence.sqlite_store import SqliteEvidenceStore
from mlwarden.responders.evidence.verify import ProblemKind, verify_incident
from mlwarden.responders.params import EvidenceSubject, SnapshotEvidenceParams
from tests.unit.test_evidence_support import T0, make_alert, make_context


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEvidenceStore]:
    opened = SqliteEvidenceStore(tmp_path / "nested" / "evidence.sqlite3")
    yield opened
    await opened.close()


def test_the_responder_satisfies_the_protocol(store: SqliteEvidenceStore) -> None:
    responder: Responder[SnapshotEvidenceParams] = SnapshotEvidenceResponder(store)
    assert responder is not None


async def test_a_snapshot_writes_alerts_and_queries_chained(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    ctx = make_context(make_alert(1), make_alert(2))
    result = await responder(SnapshotEvidenceParams(max_records=8), ctx)
    assert result == {
        "store": "sqlite",
        "incident_id": "fp-incident-1",
        "documents": 10,
        "written": 10,
        "already_stored": 0,
        "spooled": 0,
        "first_seq": 1,
        "last_seq": 10,
        "last_hash": result["last_hash"],
    }
    documents = await store.incident_documents("fp-incident-1")
    assert [d.seq for d in documents] == list(range(1, 11))
    assert [d.source["event"]["kind"] for d in documents[:3]] == ["alert", "alert", "event"]
    report = await verify_incident(store, "fp-incident-1")
    assert report.ok, report.problems


async def test_a_replayed_snapshot_writes_nothing_twice(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    ctx = make_context(make_alert(1))
    first = await responder(SnapshotEvidenceParams(max_records=5), ctx)
    again = await responder(SnapshotEvidenceParams(max_records=5), ctx)
    assert again["written"] == 0
    assert again["already_stored"] == 6
    assert (again["first_seq"], again["last_seq"]) == (first["first_seq"], first["last_seq"])
    assert len(await store.incident_documents("fp-incident-1")) == 6


async def test_a_partial_snapshot_is_completed_on_replay(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    ctx = make_context(make_alert(1))
    await responder(SnapshotEvidenceParams(max_records=5), ctx)
    db = sqlite3.connect(store.path)
    db.execute("DELETE FROM evidence WHERE seq > 3")  # the crash lost the last three writes
    db.commit()
    db.close()
    result = await responder(SnapshotEvidenceParams(max_records=5), ctx)
    assert (result["written"], result["already_stored"], result["last_seq"]) == (3, 3, 6)
    assert (await verify_incident(store, "fp-incident-1")).ok


async def test_a_second_step_continues_the_incidents_chain(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    await responder(SnapshotEvidenceParams(max_records=2), make_context(make_alert(1)))
    later = make_context(make_alert(1), make_alert(2), key="fp-incident-1/extraction/again")
    result = await responder(
        SnapshotEvidenceParams(subject=EvidenceSubject.MODEL, max_records=0), later
    )
    assert (result["first_seq"], result["last_seq"]) == (4, 5)
    assert (await verify_incident(store, "fp-incident-1")).ok


async def test_search_by_fields_wildcards_ranges_and_free_text(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    await responder(SnapshotEvidenceParams(max_records=10), make_context(make_alert(1)))
    other = make_alert(1, client="acct-2", fingerprint="fp-2", detector="blacklight")
    await responder(
        SnapshotEvidenceParams(max_records=10), make_context(other, key="k2", incident="fp-2")
    )

    async def hits(text: str) -> int:
        return len(await store.search(parse_query(text), limit=1000))

    assert await hits("client.id:acct-1 AND rule.name:prada*") == 11
    assert await hits("event.kind:alert") == 2
    assert await hits("event.kind:alert AND NOT rule.name:prada") == 1
    assert await hits("mlwarden.alert.score:>5") == 2
    assert await hits("mlwarden.alert.score:{5.5 TO *]") == 0
    assert await hits("extraction AND client.id:acct-2") == 11
    assert await hits('"model extraction"') == 2
    assert await hits("mlwarden.query.attributes.source_ip:10.0.0.*") == 20
    assert await hits(r"mlwarden.query.attributes.route:\/v1\/score") == 20
    assert await hits("labels.team:fraud AND mlwarden.incident.id:fp-2") == 11
    assert (
        await hits("client.id:acct-1 AND @timestamp:[2026-11-23T13:50:10Z TO 2026-11-23T13:50:16Z}")
        == 4
    )
    since = await store.search(parse_query("*"), since=T0, limit=100)
    assert [d.source["event"]["kind"] for d in since] == ["alert", "alert"]  # queries are older
    newest = await store.search(parse_query("*"), limit=3)
    assert [d.source["event"]["kind"] for d in newest] == ["alert", "alert", "event"]


async def test_verify_finds_an_altered_and_a_deleted_document(store: SqliteEvidenceStore) -> None:
    responder = SnapshotEvidenceResponder(store)
    await responder(SnapshotEvidenceParams(max_records=5), make_context(make_alert(1)))
    db = sqlite3.connect(store.path)
    (doc,) = db.execute("SELECT doc FROM evidence WHERE seq = 2").fetchone()
    source = json.loads(doc)
    source["mlwarden"]["query"]["prediction"] = "legit"
    db.execute("UPDATE evidence SET doc = ? WHERE seq = 2", (json.dumps(source),))
    db.execute("DELETE FROM evidence WHERE seq = 4")
    db.commit()
    db.close()
    report = await verify_incident(store, "fp-incident-1")
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.ALTERED, 2),
        (ProblemKind.GAP, 5),
    ]
