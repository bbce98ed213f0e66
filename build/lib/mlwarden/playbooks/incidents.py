"""Incident state: the last state of every playbook step, per incident, in any mapping.

The mapping is whatever the caller keeps durable: a dict in tests and backtests, a Faust table
(changelog-backed, keyed by incident id = alert fingerprint) in the stream worker. That decides
two rules here: values are JSON-able dicts only, and a value is always *replaced*, never mutated
in place, because a Faust table only writes its changelog on `__setitem__`.

Layout of one value::

    {"steps": {"<playbook>/<step index>": {"state": "succeeded", "attempts": 1, ...}}}
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mlwarden.schemas.action import StepState


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


class IncidentStore:
    """Reads and replaces step entries in the caller's mapping of incidents."""

    def __init__(self, incidents: MutableMapping[str, Any]) -> None:
        self._incidents = incidents

    def step(self, incident_id: str, step_key: str) -> StepEntry | None:
        """The entry of step `step_key` ("playbook/index") of the incident, if any."""
        incident = self._incidents.get(incident_id)
        if incident is None:
            return None
        raw = incident.get("steps", {}).get(step_key)
        return None if raw is None else StepEntry.model_validate(raw)

    def record(self, incident_id: str, step_key: str, entry: StepEntry) -> None:
        """Store `entry` for the step by replacing the incident's whole value."""
        incident = dict(self._incidents.get(incident_id) or {})
        steps = dict(incident.get("steps", {}))
        steps[step_key] = entry.model_dump(mode="json")
        incident["steps"] = steps
        self._incidents[incident_id] = incident
