"""Action record: one state change of one playbook step, published to `mlwarden.actions`.

The stream of these records is the audit trail of every response and the memory that makes
steps idempotent: a restarted engine reads a step's last state before running it again.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class StepState(StrEnum):
    """Lifecycle of a playbook step. succeeded, failed and skipped are final."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self in {StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED}


class ActionRecord(BaseModel):
    """A playbook step moved to `state`; keyed on the topic by `idempotency_key`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str = Field(description="The incident the step serves (the alert fingerprint).")
    playbook: str
    step_index: int = Field(ge=0)
    step_type: str = Field(description="page, rate_limit, snapshot_evidence, rollback_model, …")
    state: StepState
    idempotency_key: str = Field(description="Derived from incident and step; passed to effects.")
    alert_id: str
    at: AwareDatetime = Field(description="Wall-clock time of the state change.")
    attempt: int = Field(default=1, ge=1)
    result: dict[str, Any] = Field(default_factory=dict, description="What the effect reported.")
    error: str | None = None
