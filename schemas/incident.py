"""Incident summaries and human commands: what the playbook engine publishes and obeys.

`IncidentSummary` goes to the compacted topic `mlwarden.incidents`, keyed by incident id (a
tombstone once a closed incident expires), so `mlwarden incidents list` reads the topic to its
end and has the latest state of every incident. `EngineCommand` records travel on
`mlwarden.commands`: a human approves, rejects, resolves or acknowledges, or adds and removes a
silence. Every command carries a `command_id` chosen by its sender, so a command delivered twice
is applied once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from mlwarden.schemas.action import StepState
from mlwarden.schemas.alert import AlertKind, Severity

_FROZEN = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class IncidentStatus(StrEnum):
    """open → acknowledged (a human has it) → resolved; resolved is final for that incident."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class StepSummary(BaseModel):
    """The latest state of one step of one incident, as a human reads it."""

    model_config = _FROZEN

    playbook: str
    run: str = Field(description="The playbook, or `<playbook>/escalation-<n>` for escalations.")
    index: int = Field(ge=0)
    step_type: str
    state: StepState | None = Field(description="null: not reached yet.")
    attempts: int = 0
    waiting_until: AwareDatetime | None = Field(
        default=None, description="A `wait` step resumes, or a `require_approval` times out."
    )
    awaiting_approval: bool = False
    error: str | None = None


class IncidentSummary(BaseModel):
    """One incident's state; the value on `mlwarden.incidents`, keyed by `incident_id`."""

    model_config = _FROZEN

    incident_id: str
    status: IncidentStatus
    playbooks: list[str]
    group: dict[str, str | None] = Field(description="The alert fields the incident groups by.")
    kind: AlertKind
    detector: str
    severity: Severity = Field(description="The highest severity among its alerts.")
    model_id: str
    model_version: str
    client_id: str | None
    summary: str = Field(description="The latest alert's summary.")
    alert_count: int = Field(ge=1)
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    resolved_reason: str | None = None
    acknowledged_by: str | None = None
    steps: list[StepSummary] = Field(default_factory=list)


class SilenceMatcher(BaseModel):
    """`field` glob-matches (fnmatch) `pattern`; fields: kind, detector, severity, model_id,
    model_version, client_id, fingerprint, or `labels.<name>`."""

    model_config = _FROZEN

    field: str = Field(
        pattern=r"^(kind|detector|severity|model_id|model_version|client_id|"
        r"fingerprint|labels\.[A-Za-z0-9_.-]+)$"
    )
    pattern: str = Field(min_length=1)


class Silence(BaseModel):
    """Alerts matching every matcher are dropped (no incident, no steps) until `ends_at`."""

    model_config = _FROZEN

    silence_id: str = Field(min_length=1, max_length=128)
    matchers: list[SilenceMatcher] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    created_by: str = Field(min_length=1)
    comment: str = ""


class _Command(BaseModel):
    model_config = _FROZEN

    command_id: str = Field(min_length=1, max_length=128, description="Sender-chosen, unique.")
    issued_at: AwareDatetime
    by: str = Field(min_length=1, description="Who decided (a person, or a Slack user id).")


class _StepDecision(_Command):
    incident_id: str
    playbook: str | None = Field(default=None, description="Default: the only one waiting.")
    step: int | None = Field(default=None, ge=0, description="Default: the one waiting.")
    step_key: str | None = Field(
        default=None,
        description="The step as `<playbook>/<index>` (or `<playbook>/escalation-<n>/<index>`), "
        "as Slack approval buttons carry it; instead of playbook and step.",
    )
    comment: str = ""


class ApproveCommand(_StepDecision):
    """Let a `require_approval` step pass: the steps after it run."""

    type: Literal["approve"] = "approve"


class RejectCommand(_StepDecision):
    """Fail a `require_approval` step; its `on_failure` decides what follows (default abort)."""

    type: Literal["reject"] = "reject"


class ResolveCommand(_Command):
    """Close the incident now: pages are resolved, parked steps are dropped."""

    type: Literal["resolve"] = "resolve"
    incident_id: str
    comment: str = ""


class AcknowledgeCommand(_Command):
    """A human has the incident: pages are acknowledged; steps keep running."""

    type: Literal["acknowledge"] = "acknowledge"
    incident_id: str


class SilenceAddCommand(_Command):
    """Start a silence (`silence.silence_id` makes a repeated add harmless)."""

    type: Literal["silence_add"] = "silence_add"
    silence: Silence


class SilenceRemoveCommand(_Command):
    """End a silence before its time."""

    type: Literal["silence_remove"] = "silence_remove"
    silence_id: str


Command = Annotated[
    ApproveCommand
    | RejectCommand
    | ResolveCommand
    | AcknowledgeCommand
    | SilenceAddCommand
    | SilenceRemoveCommand,
    Field(discriminator="type"),
]


class EngineCommand(RootModel[Command]):
    """A command record on `mlwarden.commands` (JSON; `type` says which)."""
