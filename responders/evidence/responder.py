"""The `snapshot_evidence` step: the incident's alerts and queries, chained, in the store.

Idempotent by the step's key: documents carry the key and their position in the snapshot, and
a replay first looks for them. A complete earlier snapshot is reported as it was; a partial one
(a crash mid-write) is completed at the end of the chain; none, and the snapshot is written.
Ids derive from key and position too, so even a replay that cannot look (the store away)
writes nothing twice: the spool's re-send meets 409s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from mlwarden.responders.base import StepContext, StepResult
from mlwarden.responders.evidence.documents import (
    GENESIS,
    EvidenceDocument,
    SnapshotScope,
    chain_documents,
    snapshot_bodies,
)
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.store import EvidenceStore, WriteResult
from mlwarden.responders.params import EvidenceSubject, SnapshotEvidenceParams


class SnapshotEvidenceResponder:
    """`Responder[SnapshotEvidenceParams]` writing to `store` (see `backends.open_store`)."""

    def __init__(self, store: EvidenceStore) -> None:
        self.store = store
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per incident: its lock and how many calls hold or wait for it (chains are linear)."""

    async def __call__(self, params: SnapshotEvidenceParams, ctx: StepContext) -> StepResult:
        """Write the snapshot; the result names the chain range it occupies."""
        incident = ctx.incident_id
        lock, users = self._locks.get(incident, (asyncio.Lock(), 0))
        self._locks[incident] = (lock, users + 1)
        try:
            async with asyncio.timeout(ctx.remaining_s()), lock:
                return await self._snapshot(params, ctx)
        except TimeoutError:
            raise EvidenceStoreError(
                f"evidence store {self.store.name} did not answer before the step deadline",
                retryable=True,
            ) from None
        finally:
            lock, users = self._locks[incident]
            if users == 1:
                del self._locks[incident]
            else:
                self._locks[incident] = (lock, users - 1)

    async def _snapshot(self, params: SnapshotEvidenceParams, ctx: StepContext) -> StepResult:
        alert = ctx.alert
        alerts = (*ctx.alerts, alert)
        by_client = params.subject is EvidenceSubject.CLIENT and alert.client_id is not None
        scope = SnapshotScope(
            incident_id=ctx.incident_id,
            idempotency_key=ctx.idempotency_key,
            playbook=ctx.playbook,
            trigger=alert,
            note=params.note,
        )
        bodies = snapshot_bodies(
            alerts,
            scope,
            max_records=params.max_records,
            client_id=alert.client_id if by_client else None,
            model=None if by_client else (alert.model_id, alert.model_version),
        )
        earlier = await self._earlier(ctx)
        size = _recorded_size(earlier) if earlier else len(bodies)
        present = {d.snapshot_index for d in earlier}
        missing = [(i, body) for i, body in enumerate(bodies[:size]) if i not in present]
        written: list[EvidenceDocument] = []
        result = WriteResult()
        if missing:
            link = await self.store.last_link(ctx.incident_id) or GENESIS
            for index, body in missing:
                written += chain_documents([body], scope, link, first_index=index, size=size)
                link = written[-1].link
            result = await self.store.write(written)
        documents = sorted([*earlier, *written], key=lambda d: d.seq)
        return {
            "store": self.store.name,
            "incident_id": ctx.incident_id,
            "documents": len(documents),
            "written": result.written,
            "already_stored": len(earlier) + result.existing,
            "spooled": result.spooled,
            "first_seq": documents[0].seq if documents else None,
            "last_seq": documents[-1].seq if documents else None,
            "last_hash": documents[-1].hash if documents else None,
        }

    async def _earlier(self, ctx: StepContext) -> list[EvidenceDocument]:
        """This step's documents already stored (a replay), or [] when the store is away."""
        try:
            stored = await self.store.incident_documents(ctx.incident_id)
        except EvidenceStoreError as exc:
            if not exc.retryable:
                raise
            return []  # ids still keep a replay from writing twice
        return [d for d in stored if d.snapshot_key == ctx.idempotency_key]


def _recorded_size(documents: Sequence[EvidenceDocument]) -> int:
    snapshot: dict[str, Any] = documents[0].source["mlwarden"]["snapshot"]
    return int(snapshot["size"])
