"""The evidence store the settings ask for."""

from __future__ import annotations

from mlwarden.responders.evidence.elastic_store import ElasticEvidenceStore
from mlwarden.responders.evidence.settings import EvidenceBackend, EvidenceSettings
from mlwarden.responders.evidence.spooling import SpoolingStore
from mlwarden.responders.evidence.sqlite_store import SqliteEvidenceStore
from mlwarden.responders.evidence.store import EvidenceStore


def open_store(settings: EvidenceSettings, *, spool: bool = True) -> EvidenceStore:
    """SQLite, or Elasticsearch behind the disk spool (`spool=False` for read-only tools that
    should fail loudly when Elasticsearch is away)."""
    if settings.backend is EvidenceBackend.SQLITE:
        return SqliteEvidenceStore(settings.sqlite_path)
    elastic = ElasticEvidenceStore.from_settings(settings)
    return SpoolingStore(elastic, settings.spool_dir) if spool else elastic
