"""Typed params of every effect a playbook step can ask for.

These models are both the playbook schema of each step type (the engine's `Step` has one field
per model) and what the responder receives after the engine rendered the step's templates.
String fields may hold Jinja2 templates over the incident (`{{ alert.client_id }}`); the engine
checks them at load time and renders them before the call. A field left `None` means "take it
from the alert" (the client, the model), so most steps need no params at all.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.schemas.alert import Severity
from mlwarden.schemas.control import ControlAction
from mlwarden.schemas.duration import Duration

_PARAMS = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class RateLimitScope(StrEnum):
    """Whom a rate limit hits: the alert's client, or every client of its sybil cluster."""

    CLIENT = "client"
    CLUSTER = "cluster"


class RateLimitParams(BaseModel):
    """Throttle or block a client (or a cluster of clients) until the decision expires."""

    model_config = _PARAMS

    action: Literal[ControlAction.THROTTLE, ControlAction.BLOCK] = ControlAction.THROTTLE
    limit_per_minute: int | None = Field(
        default=None, ge=0, description="Queries per minute for `throttle` (required for it)."
    )
    duration: Duration = Field(
        default=timedelta(hours=1), description="How long the decision holds, e.g. 1h."
    )
    scope: RateLimitScope = Field(
        default=RateLimitScope.CLIENT,
        description="`cluster` limits every client id in the alert's evidence `client_ids` list.",
    )
    client_id: str | None = Field(default=None, description="Template; default: alert's client.")
    model_scoped: bool = Field(
        default=False, description="Limit the client on the alert's model only (default: all)."
    )
    reason: str | None = Field(default=None, description="Template; default: alert summary.")

    @model_validator(mode="after")
    def _throttle_needs_limit(self) -> RateLimitParams:
        if self.action is ControlAction.THROTTLE and self.limit_per_minute is None:
            raise ValueError("a throttle needs limit_per_minute (e.g. limit_per_minute: 30)")
        if self.action is ControlAction.BLOCK and self.limit_per_minute is not None:
            raise ValueError("limit_per_minute applies to throttle only; remove it for block")
        return self


class EvidenceSubject(StrEnum):
    """Whose recent telemetry goes into the evidence: the client's or the model's."""

    CLIENT = "client"
    MODEL = "model"


class SnapshotEvidenceParams(BaseModel):
    """Write the incident's alerts and recent raw telemetry to the evidence store."""

    model_config = _PARAMS

    subject: EvidenceSubject = Field(
        default=EvidenceSubject.CLIENT,
        description="`client` for per-client alerts, `model` for drift and rollout alerts.",
    )
    max_records: int = Field(default=200, ge=0, le=10_000, description="Recent queries to keep.")
    note: str | None = Field(default=None, description="Template: a line for the postmortem.")


class RollbackParams(BaseModel):
    """Move a registered model's serving alias back to an earlier version."""

    model_config = _PARAMS

    registry: Literal["mlflow", "webhook"] = "mlflow"
    model_name: str | None = Field(default=None, description="Template; default: alert model.")
    alias: str = Field(default="champion", min_length=1)
    to_version: Literal["previous"] | int = Field(
        default="previous", description="`previous` = the version before the alias's current."
    )


class PageParams(BaseModel):
    """Wake a human now (PagerDuty, Slack, or the console in the embedded demo)."""

    model_config = _PARAMS

    message: str = Field(min_length=1, description="Template, e.g. '{{ alert.summary }}'.")
    severity: Severity | None = Field(default=None, description="Default: the alert's own.")
    service: Literal["default", "pagerduty", "slack", "console"] = Field(
        default="default", description="`default` = every pager configured in settings."
    )


class NotifyParams(BaseModel):
    """Tell a channel without paging: the "ticket" of the alert guidance (Slack message)."""

    model_config = _PARAMS

    message: str = Field(min_length=1, description="Template, e.g. '{{ alert.summary }}'.")
    channel: str | None = Field(default=None, description="Default: the configured channel.")
