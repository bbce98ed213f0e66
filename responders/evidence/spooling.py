"""An evidence store that never loses a snapshot: the remote store, or the local spool.

`SpoolingStore` wraps the Elasticsearch store. Each write first delivers what is spooled (in
order), then the new documents; when the store is unreachable or overloaded (a retryable
`EvidenceStoreError`), the documents are spooled instead and the write reports them as
`spooled`. A rejection (mapping error, bad credentials) is not hidden in the spool: it raises.

Continuing a chain while the store is away needs the incident's last link. It comes from the
spool (if the incident has spooled documents, they are the newest) or from `chain-tails.json`,
which remembers the last link written for recent incidents, so a worker restart during an
outage does not fork a chain. An incident neither knows starts at seq 1; if the store did hold
earlier documents of it, `verify` reports the fork instead of hiding it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument
from mlwarden.responders.evidence.elastic_store import ElasticEvidenceStore
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.query import Query
from mlwarden.responders.evidence.spool import Spool
from mlwarden.responders.evidence.store import WriteResult

log = logging.getLogger(__name__)

TAILS_FILE: Final = "chain-tails.json"
_MAX_TAILS: Final = 10_000


class ChainTails:
    """The last link written per incident (the newest `_MAX_TAILS` incidents), on disk."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / TAILS_FILE
        self._tails: OrderedDict[str, ChainLink] | None = None

    def _load(self) -> OrderedDict[str, ChainLink]:
        if self._tails is None:
            self._tails = OrderedDict()
            if self.path.exists():
                try:
                    raw = json.loads(self.path.read_text())
                except ValueError:
                    log.warning("ignoring unreadable %s; chains continue from the store", self.path)
                    raw = {}
                for incident, (seq, digest) in raw.items():
                    self._tails[incident] = ChainLink(int(seq), str(digest))
        return self._tails

    def get(self, incident_id: str) -> ChainLink | None:
        return self._load().get(incident_id)

    def remember(self, documents: Sequence[EvidenceDocument]) -> None:
        tails = self._load()
        for document in documents:
            known = tails.get(document.incident_id)
            if known is None or document.seq >= known.seq:
                tails[document.incident_id] = document.link
                tails.move_to_end(document.incident_id)
        while len(tails) > _MAX_TAILS:
            tails.popitem(last=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({k: [v.seq, v.hash] for k, v in tails.items()}))
        os.replace(temporary, self.path)


class SpoolingStore:
    """`inner`, with a local spool for the times it cannot be reached."""

    def __init__(self, inner: ElasticEvidenceStore, spool_dir: Path | str) -> None:
        self.inner = inner
        self.spool = Spool(spool_dir)
        self.tails = ChainTails(Path(spool_dir))
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    async def pending(self) -> int:
        """Documents waiting in the spool."""
        documents, _ = await asyncio.to_thread(self.spool.pending)
        return len(documents)

    async def flush(self) -> int:
        """Deliver the spool in order; returns how many documents were delivered.

        Raises the retryable `EvidenceStoreError` if the store is still away.
        """
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        documents, size = await asyncio.to_thread(self.spool.pending)
        if not documents:
            return 0
        await self.inner.write(documents)
        await asyncio.to_thread(self.spool.discard_delivered, size)
        log.info("delivered %d spooled evidence documents", len(documents))
        return len(documents)

    async def flush_forever(self, interval_s: float = 30.0) -> None:
        """Deliver the spool every `interval_s` until cancelled (a worker background task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except EvidenceStoreError as exc:
                if not exc.retryable:
                    raise
                log.info("evidence spool kept: %s", exc)

    async def write(self, documents: Sequence[EvidenceDocument]) -> WriteResult:
        async with self._lock:
            try:
                await self._flush()
                result = await self.inner.write(documents)
            except EvidenceStoreError as exc:
                if not exc.retryable:
                    raise
                await asyncio.to_thread(self.spool.append, documents)
                log.warning("evidence spooled (%d documents): %s", len(documents), exc)
                result = WriteResult(spooled=len(documents))
            await asyncio.to_thread(self.tails.remember, documents)
            return result

    async def last_link(self, incident_id: str) -> ChainLink | None:
        spooled, _ = await asyncio.to_thread(self.spool.pending)
        mine = [d.link for d in spooled if d.incident_id == incident_id]
        if mine:
            return max(mine, key=lambda link: link.seq)
        try:
            return await self.inner.last_link(incident_id)
        except EvidenceStoreError as exc:
            if not exc.retryable:
                raise
            return await asyncio.to_thread(self.tails.get, incident_id)

    async def search(
        self, query: Query, since: datetime | None = None, limit: int = 100
    ) -> list[EvidenceDocument]:
        """Searches the store (spooled documents become searchable once delivered)."""
        return await self.inner.search(query, since, limit)

    async def incident_documents(self, incident_id: str) -> list[EvidenceDocument]:
        """The store's documents of the incident plus its spooled ones, in chain order."""
        stored = await self.inner.incident_documents(incident_id)
        spooled, _ = await asyncio.to_thread(self.spool.pending)
        by_id = {d.id: d for d in stored}
        for document in spooled:
            if document.incident_id == incident_id:
                by_id.setdefault(document.id, document)
        return sorted(by_id.values(), key=lambda d: (d.seq, d.snapshot_key, d.snapshot_index))

    async def close(self) -> None:
        await self.inner.close()
