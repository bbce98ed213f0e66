"""Control decision: a rate-limit or block that gateways enforce for one client.

Published to the compacted topic `mlwarden.controls` keyed by `ControlDecision.key`: the
`client_id` for a decision on every model, and `client_id` + U+001F (the ASCII unit separator)
+ `model_id` for a model-scoped one, so a model-scoped throttle does not compact away the same
client's block on all models. The latest record per key is what a gateway that (re)starts
reads. Decisions expire by themselves; a `lift` ends one early.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

KEY_SEPARATOR: Final = "\x1f"
"""Between client id and model id in the key of a model-scoped decision (never in ids)."""


def control_key(client_id: str, model_id: str | None) -> str:
    """The topic key (and Redis key suffix) of the decision for this client and model scope."""
    return client_id if model_id is None else f"{client_id}{KEY_SEPARATOR}{model_id}"


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
    decision_id: str | None = Field(
        default=None,
        description="Id of the step that decided it (its idempotency key): a retried or "
        "replayed step finds its own earlier decision by it and changes nothing. Null for "
        "decisions made by hand (`mlwarden controls lift`).",
    )

    @property
    def key(self) -> str:
        """Key on the controls topic: one live decision per client and model scope."""
        return control_key(self.client_id, self.model_id)

    @model_validator(mode="after")
    def _limit_matches_action(self) -> Self:
        if KEY_SEPARATOR in self.client_id or KEY_SEPARATOR in (self.model_id or ""):
            raise ValueError("client_id and model_id must not contain U+001F (the key separator)")
        if self.action is ControlAction.THROTTLE and self.limit_per_minute is None:
            raise ValueError("a throttle needs limit_per_minute")
        if self.action is not ControlAction.THROTTLE and self.limit_per_minute is not None:
            raise ValueError(f"limit_per_minute applies to throttle only, not {self.action.value}")
        if self.action is not ControlAction.LIFT and self.expires_at is None:
            raise ValueError(f"a {self.action.value} needs expires_at: decisions must lapse")
        if self.expires_at is not None and self.expires_at <= self.decided_at:
            raise ValueError("expires_at must be after decided_at")
        return self
