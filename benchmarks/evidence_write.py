"""Evidence write throughput on both stores, measured in one run: documents per second.

Writes the same snapshots (1 alert + 199 queries each, as the default `max_records=200` gives)
through `SnapshotEvidenceResponder` into the embedded SQLite store and into a real
Elasticsearch-compatible server (osmem, in memory, on this machine). Each snapshot is one
transaction (SQLite) or one bulk request with refresh=wait_for (Elasticsearch), plus the
replay check and the chain-tail read the responder does. Run:
`python benchmarks/evidence_write.py`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlwarden.responders.evidence.elastic_store import ElasticEvidenceStore
from mlwarden.responders.evidence.install import install_elasticsearch
from mlwarden.responders.evidence.responder import SnapshotEvidenceResponder
from mlwarden.responders.evidence.sqlite_store import SqliteEvidenceStore
from mlwarden.responders.evidence.store import EvidenceStore
from mlwarden.responders.params import SnapshotEvidenceParams
from tests.integration.osmem_server import OsmemProcess, evidence_settings
from tests.unit.test_evidence_support import make_alert, make_context, query_record

SNAPSHOTS = 25
RECORDS = 199


async def run(store: EvidenceStore) -> float:
    responder = SnapshotEvidenceResponder(store)
    records = [query_record(i) for i in range(RECORDS)]
    started = time.perf_counter()
    documents = 0
    for n in range(SNAPSHOTS):
        alert = make_alert(n, fingerprint=f"fp-{n}", recent_telemetry=records)
        ctx = make_context(alert, key=f"fp-{n}/pb/snapshot", incident=f"fp-{n}")
        result = await responder(SnapshotEvidenceParams(max_records=RECORDS), ctx)
        documents += result["written"]
    elapsed = time.perf_counter() - started
    return documents / elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = SqliteEvidenceStore(Path(scratch) / "evidence.sqlite3")
        sqlite_rate = await run(sqlite)
        await sqlite.close()
        server = OsmemProcess().start()
        try:
            settings = evidence_settings(server.url, Path(scratch) / "spool")
            elastic = ElasticEvidenceStore.from_settings(settings)
            await install_elasticsearch(elastic.client, settings)
            elastic_rate = await run(elastic)
            await elastic.close()
        finally:
            server.stop()
    total = SNAPSHOTS * (RECORDS + 1)
    print(f"{SNAPSHOTS} snapshots x {RECORDS + 1} documents = {total} documents per store")
    print(f"SQLite (WAL, FTS5):            {sqlite_rate:,.0f} documents/s")
    print(f"Elasticsearch API (osmem):     {elastic_rate:,.0f} documents/s")
    print(f"ratio SQLite / Elasticsearch:  {sqlite_rate / elastic_rate:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
