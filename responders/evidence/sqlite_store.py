"""The embedded evidence store: one SQLite file with an FTS5 index, for the demo and one node.

Documents are kept as the exact JSON that was hashed, beside the few columns queries sort and
filter on. `message` is indexed by FTS5 for free text. WAL mode lets `mlwarden evidence search`
read while a worker writes. sqlite3 is blocking, so every call runs on one dedicated thread:
the event loop never waits on disk, and the connection is only ever used from that thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.query import Query
from mlwarden.responders.evidence.store import WriteResult
from mlwarden.responders.evidence.translate_sql import to_sql

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS evidence (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: it keys the FTS rows
    id TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_incident ON evidence (incident_id, seq);
CREATE INDEX IF NOT EXISTS evidence_ts ON evidence (ts);
CREATE VIRTUAL TABLE IF NOT EXISTS evidence_fts USING fts5 (
    message, tokenize = 'unicode61 remove_diacritics 0'
);
"""


class SqliteEvidenceStore:
    """Evidence in a local SQLite file (created with its parent folder on first use)."""

    name: Final = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-sqlite")
        self._connection: sqlite3.Connection | None = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            try:
                return work(self._connect())
            except sqlite3.Error as exc:
                raise EvidenceStoreError(
                    f"evidence database {self.path}: {exc}", retryable=False
                ) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            self._connection = connection
        return self._connection

    async def write(self, documents: Sequence[EvidenceDocument]) -> WriteResult:
        rows = [
            (
                doc.id,
                doc.incident_id,
                doc.seq,
                doc.timestamp.timestamp(),
                json.dumps(doc.source, ensure_ascii=False, separators=(",", ":")),
                str(doc.source.get("message", "")),
            )
            for doc in documents
        ]

        def work(db: sqlite3.Connection) -> WriteResult:
            written = 0
            db.execute("BEGIN IMMEDIATE")
            try:
                for doc_id, incident, seq, ts, doc, message in rows:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO evidence (id, incident_id, seq, ts, doc) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (doc_id, incident, seq, ts, doc),
                    )
                    if cursor.rowcount == 1:
                        db.execute(
                            "INSERT INTO evidence_fts (rowid, message) VALUES (?, ?)",
                            (cursor.lastrowid, message),
                        )
                        written += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return WriteResult(written=written, existing=len(rows) - written)

        return await self._run(work)

    async def last_link(self, incident_id: str) -> ChainLink | None:
        def work(db: sqlite3.Connection) -> ChainLink | None:
            row = db.execute(
                "SELECT doc FROM evidence WHERE incident_id = ? ORDER BY seq DESC, id DESC LIMIT 1",
                (incident_id,),
            ).fetchone()
            return None if row is None else _document("", row[0]).link

        return await self._run(work)

    async def search(
        self, query: Query, since: datetime | None = None, limit: int = 100
    ) -> list[EvidenceDocument]:
        where, params = to_sql(query)
        if since is not None:
            where = f"({where}) AND evidence.ts >= ?"
            params = [*params, round(since.timestamp() * 1000) / 1000]

        def work(db: sqlite3.Connection) -> list[EvidenceDocument]:
            rows = db.execute(
                f"SELECT id, doc FROM evidence WHERE {where} "  # noqa: S608 (bound params)
                "ORDER BY ts DESC, incident_id, seq, id LIMIT ?",
                [*params, limit],
            ).fetchall()
            return [_document(doc_id, doc) for doc_id, doc in rows]

        return await self._run(work)

    async def incident_documents(self, incident_id: str) -> list[EvidenceDocument]:
        def work(db: sqlite3.Connection) -> list[EvidenceDocument]:
            rows = db.execute(
                "SELECT id, doc FROM evidence WHERE incident_id = ? ORDER BY seq, id",
                (incident_id,),
            ).fetchall()
            return [_document(doc_id, doc) for doc_id, doc in rows]

        return await self._run(work)

    async def close(self) -> None:
        def work() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._executor, work)
        self._executor.shutdown(wait=True)


def _document(doc_id: str, doc: str) -> EvidenceDocument:
    source: dict[str, object] = json.loads(doc)
    return EvidenceDocument(doc_id, source)
