"""Incident state, kept whole in any mapping the caller makes durable.

The mapping is a dict in tests, backtests and dry runs, and a Faust table (changelog-backed) in
the stream worker. That decides three rules here:

- values are JSON-able dicts only (an `Incident` dumped in JSON mode);
- a value is always *replaced*, never mutated in place: a Faust table writes its changelog only
  on `__setitem__`;
- everything the engine needs to resume after a restart is in the value: where each playbook
  run stands, each step's last state, what it is waiting for, the alerts folded in so far.

Keys: an incident lives under its group key (the alert fingerprint with the default grouping,
`grp-<hash>` otherwise), one value per group: a new incident of a group replaces the closed one
(whose summary was already published). Silences live under `silence:<id>`.

Bounds: an incident keeps its first and latest alert in full and at most `MAX_ALERTS` recent ones
without their raw telemetry, and the last `MAX_IDS` alert ids and command ids (for replay
detection); a closed incident is deleted `retention` after it closed (engine `tick`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mlwarden.schemas.action import StepState
from mlwarden.schemas.alert import Alert, Severity
from mlwarden.schemas.incident import IncidentStatus, Silence

MAX_ALERTS: Final = 20
MAX_IDS: Final = 100
SILENCE_PREFIX: Final = "silence:"

RunStatus = Literal["active", "parked", "done", "aborted"]


class StepEntry(BaseModel):
    """The recorded state of one step of one incident."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: StepState
    attempts: int = Field(ge=1, description="How many times the step was started.")
    idempotency_key: str
    alert_id: str = Field(description="The alert whose handling last changed this entry.")
    at: AwareDatetime
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    until: AwareDatetime | None = Field(
        default=None, description="A running wait ends, or a pending approval times out."
    )
    awaiting_approval: bool = False
    follow_ups: dict[str, StepState] = Field(
        default_factory=dict, description="Follow-up key suffix (#resolved, ...) → state."
    )

    @property
    def parked(self) -> bool:
        """A wait or an approval holding its run (not a step interrupted by a crash)."""
        return self.state in (StepState.RUNNING, StepState.PENDING) and self.until is not None


class Incident(BaseModel):
    """One incident: a group of alerts, the playbook runs answering it, and their steps."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    incident_id: str
    key: str = Field(description="The mapping key: the incident's group key.")
    generation: int = Field(ge=1, description="1 for the group's first incident, then 2, ...")
    status: IncidentStatus = IncidentStatus.OPEN
    group: dict[str, str | None]
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    last_alert_at: AwareDatetime = Field(description="Engine time of the latest alert.")
    resolved_at: AwareDatetime | None = None
    resolved_reason: str | None = None
    acknowledged_by: str | None = None
    severity: Severity
    alert_count: int = Field(ge=1)
    first_alert: Alert
    latest_alert: Alert
    recent_alerts: list[Alert] = Field(default_factory=list)
    alert_ids: list[str] = Field(default_factory=list)
    alert_times: list[AwareDatetime] = Field(
        default_factory=list, description="Detection times of recent alerts, for escalation."
    )
    fingerprints: list[str] = Field(default_factory=list)
    playbooks: list[str] = Field(default_factory=list)
    runs: dict[str, RunStatus] = Field(default_factory=dict)
    steps: dict[str, StepEntry] = Field(default_factory=dict)
    last_repeat_at: AwareDatetime | None = None
    resolve_after_s: float
    realert_s: float
    repeat_interval_s: float | None = None
    commands: list[str] = Field(default_factory=list, description="Applied command ids.")
    due_at: float | None = Field(
        default=None, description="Epoch seconds when `tick` must look at it again."
    )

    @property
    def closed(self) -> bool:
        return self.status is IncidentStatus.RESOLVED

    def alerts(self) -> tuple[Alert, ...]:
        """The first alert, the recent ones and the latest, oldest first, without repeats.

        Earlier copies are stored without their raw telemetry; the latest alert keeps it, so
        its copy wins where the same alert appears twice (evidence needs those queries).
        """
        by_id: dict[str, Alert] = {}
        for alert in (self.first_alert, *self.recent_alerts):
            by_id.setdefault(alert.alert_id, alert)
        by_id[self.latest_alert.alert_id] = self.latest_alert
        return tuple(by_id.values())


def without_telemetry(alert: Alert) -> Alert:
    """`alert` without its raw telemetry (kept only on the latest alert, for evidence)."""
    return alert.model_copy(update={"recent_telemetry": []}) if alert.recent_telemetry else alert


def bounded(items: list[Any], item: Any, limit: int) -> list[Any]:
    """`items + [item]`, keeping the newest `limit`."""
    return [*items, item][-limit:]


class IncidentStore:
    """Reads and replaces incidents and silences in the caller's mapping."""

    def __init__(self, mapping: MutableMapping[str, Any]) -> None:
        self._mapping = mapping

    def get(self, key: str) -> Incident | None:
        raw = self._mapping.get(key)
        return None if raw is None else Incident.model_validate(raw)

    def put(self, incident: Incident) -> None:
        self._mapping[incident.key] = incident.model_dump(mode="json")

    def delete(self, key: str) -> None:
        self._mapping.pop(key, None)

    def find(self, incident_id: str) -> Incident | None:
        """The incident with id `incident_id` (`<key>` or `<key>~<generation>`), if stored."""
        for key in (incident_id, incident_id.rsplit("~", 1)[0]):
            incident = self.get(key)
            if incident is not None and incident.incident_id == incident_id:
                return incident
        return None

    def due_keys(self, now: datetime) -> list[str]:
        """Keys of incidents whose `due_at` has come (read without validating every value)."""
        stamp = now.timestamp()
        return [
            key
            for key, raw in list(self._mapping.items())
            if not key.startswith(SILENCE_PREFIX)
            and isinstance(raw, dict)
            and raw.get("due_at") is not None
            and float(raw["due_at"]) <= stamp
        ]

    def incidents(self) -> Iterator[Incident]:
        for key in list(self._mapping):
            if not key.startswith(SILENCE_PREFIX):
                incident = self.get(key)
                if incident is not None:
                    yield incident

    def silences(self) -> list[Silence]:
        return [
            Silence.model_validate(raw)
            for key, raw in list(self._mapping.items())
            if key.startswith(SILENCE_PREFIX)
        ]

    def put_silence(self, silence: Silence) -> None:
        self._mapping[SILENCE_PREFIX + silence.silence_id] = silence.model_dump(mode="json")

    def delete_silence(self, silence_id: str) -> bool:
        return self._mapping.pop(SILENCE_PREFIX + silence_id, None) is not None
