"""The playbook schema: what a YAML playbook may say, as pydantic models.

These models are the one source of truth for the format: the loader only turns YAML into the
plain values they validate, and their JSON Schema (`schemas/json/playbook.json`) is what editors
check playbooks against::

    name: extraction-client
    match: {kinds: [extraction], detectors: [prada, blacklight], min_severity: warning}
    group_by: [client_id, model_version]   # one incident per client and model version
    realert: 30m                            # after it resolves, its alerts stay quiet this long
    resolve: {after: 2h}                    # quiet period; also on a detector's recovery alert
    inhibits: [{severity: warning, same: [model_id]}]
    steps:
      - rate_limit: {action: throttle, limit_per_minute: 10}
      - page: {message: "client {{ alert.client_id }} ..."}
    escalate:
      - {repeated: 3, within: 30m, steps: [{page: {severity: critical, message: ...}}]}

Every model is frozen and refuses unknown fields, so a misspelt key is an error at load time
rather than a silently ignored option during an incident.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from mlwarden.playbooks.conditions import Condition
from mlwarden.playbooks.matching import Match, severity_rank
from mlwarden.playbooks.steps import OnFailure, Step
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.duration import Duration

__all__ = ["Escalation", "Inhibit", "Match", "Playbook", "Resolve", "Step", "severity_rank"]

# A playbook name is part of every idempotency key (`incident/playbook/step`), so it may not
# contain "/" or whitespace: two playbooks must never produce the same key.
_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
GROUP_FIELD_PATTERN: Final = (
    r"^(fingerprint|kind|detector|model_id|model_version|client_id|labels\.[A-Za-z0-9_.-]+)$"
)
_FROZEN_STRICT = ConfigDict(frozen=True, extra="forbid")


def _problem(error_type: str, message: str, path: list[str | int] | None = None) -> Exception:
    context: dict[str, Any] = {"problem": message}
    if path:
        context["path"] = path  # the loader points at this sub-path of the failing model
    return PydanticCustomError(error_type, "{problem}", context)


def _checked_name(name: str) -> str:
    if re.fullmatch(_NAME_PATTERN, name) is None:
        raise _problem(
            "playbook_name",
            "a playbook name is letters, digits, '_', '.' and '-', starting with a letter or "
            "digit (no '/' or spaces: it is part of every step's idempotency key)",
        )
    return name


PlaybookName = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": _NAME_PATTERN}),
    AfterValidator(_checked_name),
]
GroupField = Annotated[
    str,
    Field(
        pattern=GROUP_FIELD_PATTERN,
        description="An alert field: fingerprint, kind, detector, model_id, model_version, "
        "client_id, or labels.<name>.",
    ),
]


def group_value(alert: Alert, field: str) -> str | None:
    """The value of group field `field` (see `GroupField`) in `alert`."""
    if field.startswith("labels."):
        return alert.labels.get(field.removeprefix("labels."))
    value = getattr(alert, field)
    return None if value is None else str(value)


class Resolve(BaseModel):
    """When an incident closes by itself (a human can always `resolve` it).

    Recovery: an alert whose `labels.status` is `resolved` (a detector reporting that its
    statistic is back under the threshold) closes the open incident of its group and opens
    nothing. Quiet period: no alert of the group for `after`.
    """

    model_config = _FROZEN_STRICT

    after: Duration = Field(
        default=timedelta(hours=24),
        description="Resolve after this long without an alert (bounds how long incidents live).",
    )
    on_recovery: bool = Field(
        default=True, description="Resolve on an alert labelled `status: resolved`."
    )


class Escalation(BaseModel):
    """Extra steps, run once per incident when the incident gets worse.

    Fires when any trigger given holds: an alert at `min_severity` or above, `repeated` alerts
    within `within` (by the alerts' detection times), or `condition` (JMESPath over
    {alert, incident}). A rule with no trigger fires only through a step's
    `on_failure: escalate`. The issue's "warning → ticket, repeated or critical → page" is a
    `notify` step plus a rule `{min_severity: critical, repeated: 3, within: 1h, steps: [page]}`.
    """

    model_config = _FROZEN_STRICT

    min_severity: Severity | None = None
    repeated: int | None = Field(default=None, ge=2, le=100)
    within: Duration | None = None
    condition: Condition | None = None
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _repeated_needs_window(self) -> Escalation:
        if (self.repeated is None) != (self.within is None):
            raise _problem(
                "escalation", "`repeated` and `within` go together (e.g. repeated: 3, within: 1h)"
            )
        for index, step in enumerate(self.steps):
            if step.on_failure is OnFailure.ESCALATE:
                raise _problem(
                    "escalation",
                    "an escalation step cannot escalate again; use continue or abort",
                    ["steps", index, "on_failure"],
                )
        return self


class Inhibit(BaseModel):
    """While this playbook has an open incident at `source_severity` or above, drop alerts at
    `severity` or below that share the fields in `same` (Alertmanager's inhibition): one
    critical page for a model, not twenty warning tickets about the same model."""

    model_config = _FROZEN_STRICT

    source_severity: Severity = Severity.CRITICAL
    severity: Severity = Severity.WARNING
    same: list[GroupField] = Field(default_factory=lambda: ["model_id"], min_length=1)
    kinds: list[AlertKind] | None = Field(
        default=None, description="Kinds of alerts inhibited; default: every kind."
    )


class Playbook(BaseModel):
    """A named response: when an alert matches, fold it into an incident and run the steps."""

    model_config = _FROZEN_STRICT

    name: PlaybookName = Field(description="Unique among loaded playbooks; part of step keys.")
    description: str = ""
    match: Match
    group_by: list[GroupField] = Field(
        default_factory=lambda: ["fingerprint"],
        min_length=1,
        description="Alerts with equal values of these fields share one incident.",
    )
    realert: Duration = Field(
        default=timedelta(0),
        description="After an incident resolves, alerts of its group within this long are "
        "folded into it and open no new incident (no new pages).",
    )
    repeat_interval: Duration | None = Field(
        default=None,
        description="Tell succeeded steps (Slack thread, PagerDuty) about repeated alerts at "
        "most this often; omit to stay silent on repeats.",
    )
    resolve: Resolve = Field(default_factory=Resolve)
    inhibits: list[Inhibit] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    escalate: list[Escalation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _escalate_needs_rules(self) -> Playbook:
        if not self.escalate:
            for index, step in enumerate(self.steps):
                if step.on_failure is OnFailure.ESCALATE:
                    raise _problem(
                        "escalation",
                        "on_failure: escalate needs an `escalate` rule in the playbook; "
                        "add one or use continue/abort",
                        ["steps", index, "on_failure"],
                    )
        return self

    def matches(self, alert: Alert) -> bool:
        """True when this playbook should respond to `alert`."""
        return self.match.matches(alert)

    def run_steps(self, run: str) -> list[Step]:
        """The steps of run `run`: the playbook's name, or `<name>/escalation-<n>`."""
        if run == self.name:
            return self.steps
        index = int(run.rsplit("-", 1)[1])
        return self.escalate[index].steps


def escalation_run(playbook: str, index: int) -> str:
    """The run name of escalation rule `index`: part of its steps' idempotency keys."""
    return f"{playbook}/escalation-{index}"
