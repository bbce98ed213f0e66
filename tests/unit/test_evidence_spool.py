"""The disk spool: durable appends in order, torn lines ignored, delivered bytes dropped."""

from __future__ import annotations

from pathlib import Path

from mlwarden.responders.evidence.backends import open_store
from mlwarden.responders.evidence.documents import (
    GENESIS,
    SnapshotScope,
    chain_documents,
    snapshot_bodies,
)
from mlwarden.responders.evidence.settings import EvidenceBackend, EvidenceSettings
from mlwarden.responders.evidence.spool import Spool
from mlwarden.responders.evidence.spooling import SpoolingStore
from mlwarden.streams.broker import free_port
from tests.unit.test_evidence_support import make_alert


def documents(key: str = "inc/pb/snap", n: int = 3) -> list:  # type: ignore[type-arg]
    scope = SnapshotScope("inc", key, "pb", make_alert())
    bodies = snapshot_bodies([make_alert()], scope, max_records=n - 1, client_id=None, model=None)
    return chain_documents(bodies, scope, GENESIS)


def test_appends_come_back_in_order_and_survive_a_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first, second = documents("a"), documents("b")
    spool.append(first)
    with spool.path.open("ab") as handle:
        handle.write(b'{"documents": [{"id": "torn')  # a crash in mid-append
    spool.append(second)
    pending, size = spool.pending()
    assert [d.id for d in pending] == [d.id for d in first + second]
    assert pending[0].source == first[0].source
    assert size == spool.path.stat().st_size


def test_discarding_keeps_what_was_appended_after_the_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(documents("a"))
    _, size = spool.pending()
    late = documents("late")
    spool.append(late)
    spool.discard_delivered(size)
    pending, _ = spool.pending()
    assert [d.id for d in pending] == [d.id for d in late]
    spool.discard_delivered(spool.pending()[1])
    assert spool.pending() == ([], 0)


async def test_unreachable_elasticsearch_spools_and_keeps_the_chain(tmp_path: Path) -> None:
    settings = EvidenceSettings(
        backend=EvidenceBackend.ELASTICSEARCH,
        elasticsearch_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        spool_dir=tmp_path / "spool",
        request_timeout_s=2.0,
    )
    store = open_store(settings)
    assert isinstance(store, SpoolingStore)
    try:
        batch = documents()
        result = await store.write(batch)
        assert result.spooled == 3
        assert await store.pending() == 3
        assert await store.last_link("inc") == batch[-1].link
        # A restarted worker (new store object, same folder) still knows the tail.
        again = open_store(settings)
        assert await again.last_link("inc") == batch[-1].link
        await again.close()
    finally:
        await store.close()
