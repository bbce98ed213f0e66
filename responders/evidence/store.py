"""The one interface every evidence backend implements.

The responder, `verify` and the CLI see only this protocol, so the embedded SQLite store, the
Elasticsearch store and the spooling wrapper are interchangeable: the same documents, the same
query syntax, the same hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument
from mlwarden.responders.evidence.query import Query, parse_query


@dataclass(frozen=True)
class WriteResult:
    """What a write did with each document."""

    written: int = 0
    """Stored now."""
    existing: int = 0
    """Already stored under the same id (a replay): left as they were."""
    spooled: int = 0
    """Kept on local disk because the store was away; delivered by a later flush."""


class EvidenceStore(Protocol):
    """Append-only evidence documents, chained per incident, searchable."""

    @property
    def name(self) -> str:
        """`sqlite` or `elasticsearch` (reported in step results)."""
        ...

    async def write(self, documents: Sequence[EvidenceDocument]) -> WriteResult:
        """Store `documents` in order; ids already present are left untouched (idempotent)."""
        ...

    async def last_link(self, incident_id: str) -> ChainLink | None:
        """The link the incident's chain ends with (highest seq), or None for a new incident."""
        ...

    async def search(
        self, query: Query, since: datetime | None = None, limit: int = 100
    ) -> list[EvidenceDocument]:
        """Documents matching `query` at or after `since`, newest first."""
        ...

    async def incident_documents(self, incident_id: str) -> list[EvidenceDocument]:
        """Every document of the incident, in chain order (seq, then id)."""
        ...

    async def close(self) -> None: ...


def as_query(query: Query | str) -> Query:
    """Accept a parsed query or its text."""
    return parse_query(query) if isinstance(query, str) else query
