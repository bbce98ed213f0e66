"""Control decision: a rate-limit or block that gateways enforce for one client.

Published to the compacted topic `mlwarden.controls` keyed by `client_id`, so the latest decision
per client is what a gateway that (re)starts reads. Decisions expire by themselves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class ControlAction(StrEnum):
    """throttle: cap at `limit_per_minute`; block: refuse all; lift: back to normal."""

    THROTTLE = "throttle"
    BLOCK = "block"
    LIFT = "lift"


class ControlDecision(BaseModel):
    """What a gateway must do with one client's requests until `expires_at`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    client_id: str = Field(min_length=1)
    action: ControlAction
    limit_per_minute: int | None = Field(default=None, ge=0)
    model_id: str | None = Field(default=None, description="Scope to one model; null = all.")
    decided_at: AwareDatetime
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the decision lapses by itself; null only for lift."
    )
    reason: str
    incident_id: str | None = None

    @model_validator(mode="after")
    def _limit_matches_action(self) -> Self:
        if self.action is ControlAction.THROTTLE and self.limit_per_minute is None:
            raise ValueError("a throttle needs limit_per_minute")
        if self.action is not ControlAction.THROTTLE and self.limit_per_minute is not None:
            raise ValueError(f"limit_per_minute applies to throttle only, not {self.action.value}")
        if self.action is not ControlAction.LIFT and self.expires_at is None:
            raise ValueError(f"a {self.action.value} needs expires_at: decisions must lapse")
        if self.expires_at is not None and self.expires_at <= self.decided_at:
            raise ValueError("expires_at must be after decided_at")
        return self
