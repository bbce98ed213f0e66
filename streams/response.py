"""The worker's response side, assembled from settings: every responder and the incident table.

The playbook engine is pure: it takes a mapping of responders by step type and a mapping to
keep incidents in. This module builds both for the stream worker — the real backends the
settings name (Redis, Elasticsearch or SQLite, MLflow, Slack, PagerDuty, the console) — and
closes their clients on shutdown. Nothing here decides anything about an incident.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from faust.types import TableT

from mlwarden.playbooks.incidents import IncidentStore
from mlwarden.responders.base import Responder
from mlwarden.responders.evidence.backends import open_store
from mlwarden.responders.evidence.responder import SnapshotEvidenceResponder
from mlwarden.responders.paging_settings import build_pagers
from mlwarden.responders.rate_limit import Publish, RateLimitResponder
from mlwarden.responders.rollback import RollbackResponder
from mlwarden.streams.settings import Settings

CHANGELOG_PARTITION = 0
"""The alerts and commands topics have one partition, so the incident table has one too."""


@dataclass
class Responders:
    """The responders by step type, and what to close when the worker stops."""

    by_step_type: dict[str, Responder[Any]]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close every client, each even if another one fails to close."""
        errors: list[BaseException] = []
        for close in self.closers:
            try:
                await close()
            except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]


def build_responders(
    settings: Settings,
    *,
    publish_control: Publish,
    incidents: MutableMapping[str, Any],
    clock: Callable[[], datetime],
    console: TextIO | None = None,
) -> Responders:
    """Every step type's responder over the backends `settings` configures.

    `publish_control` sends a rate-limit decision to `mlwarden.controls` and waits for the
    broker's acknowledgement; `incidents` is the engine's mapping, read by the rollback guard
    ("never roll back onto a version with its own open incident").
    """
    paging = build_pagers(settings.paging, console_stream=console)
    controls = settings.rate_limit.store()
    evidence = open_store(settings.evidence)
    rollback = RollbackResponder.from_settings(
        settings.registry, open_incident_versions=OpenIncidentVersions(incidents)
    )
    return Responders(
        by_step_type={
            "page": paging.page,
            "notify": paging.notify,
            "rate_limit": RateLimitResponder(publish_control, controls, clock=clock),
            "snapshot_evidence": SnapshotEvidenceResponder(evidence),
            "rollback_model": rollback,
        },
        closers=[paging.aclose, controls.aclose, evidence.close, rollback.aclose],
    )


class OpenIncidentVersions:
    """Versions of a model that have an open incident, read from the engine's mapping."""

    def __init__(self, incidents: MutableMapping[str, Any]) -> None:
        self._store = IncidentStore(incidents)

    def __call__(self, model_name: str) -> set[str]:
        return {
            incident.latest_alert.model_version
            for incident in self._store.incidents()
            if not incident.closed and incident.latest_alert.model_id == model_name
        }


class IncidentTable(MutableMapping[str, Any]):
    """A Faust table the engine may write from anywhere, timers included.

    Faust's own `table[key] = value` works only while an agent processes an event, and takes
    the changelog partition from that event; the engine also writes from its once-a-second
    `tick`. All incident state belongs to partition 0 (single-partition alerts and commands),
    so every write goes to the local data and to changelog partition 0, as Faust would do.
    """

    def __init__(self, table: TableT[str, Any]) -> None:
        self._table = table

    def __getitem__(self, key: str) -> Any:
        return self._table.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._table.data[key] = value
        self._table.send_changelog(CHANGELOG_PARTITION, key, value)

    def __delitem__(self, key: str) -> None:
        del self._table.data[key]
        self._table.send_changelog(CHANGELOG_PARTITION, key, None, value_serializer="raw")

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._table.data))

    def __len__(self) -> int:
        return len(self._table.data)
