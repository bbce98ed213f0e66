"""What every responder shares: the step context it acts in and the one retry policy.

A responder is an async callable `(params, ctx) -> StepResult`. `params` is its typed params
model (`responders.params`), already rendered by the playbook engine; `ctx` says which
incident and step it serves, the idempotency key to hand to the outside world, and the deadline
by which it must give up. Responders raise `ResponderError(retryable=...)` on failure and never
retry on their own: `call_with_retries` is the one place where attempts, backoff and the
deadline meet, so every effect retries the same way (SRE: one policy, tuned in one place).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from mlwarden.schemas.alert import Alert
from mlwarden.schemas.duration import Duration
from mlwarden.schemas.errors import ResponderError

StepResult = dict[str, Any]
"""What an effect reports (JSON-able): stored in the incident and on `mlwarden.actions`."""

ParamsT_contra = TypeVar("ParamsT_contra", bound=BaseModel, contravariant=True)
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class StepContext:
    """The incident and step a responder acts for.

    `idempotency_key` is stable across retries and restarts (`incident/playbook/step`):
    responders pass it on where the backend has such a notion (PagerDuty `dedup_key`, the
    evidence document ids, the control decision's id) and use it to find their own earlier
    result, so a repeated call does nothing twice.
    """

    idempotency_key: str
    incident_id: str
    playbook: str
    alert: Alert
    """The incident's latest alert (the one being handled)."""
    alerts: tuple[Alert, ...] = ()
    """Every alert folded into the incident so far, oldest first (bounded by the engine)."""
    deadline: float = field(default_factory=lambda: time.monotonic() + 30.0)
    """`time.monotonic()` value after which the step must give up."""
    attempt: int = 1

    def remaining_s(self) -> float:
        """Seconds left before the deadline (never negative): use as the outbound timeout."""
        return max(0.0, self.deadline - time.monotonic())


class Responder(Protocol[ParamsT_contra]):
    """Performs one step type's effect."""

    async def __call__(self, params: ParamsT_contra, ctx: StepContext) -> StepResult: ...


class IncidentChange(StrEnum):
    """What happened to an incident after a step's effect succeeded."""

    REPEAT = "repeat"
    """Another alert was folded into the incident (a Slack thread reply, a status update)."""
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    """The detector reported recovery, the quiet period passed, or a human resolved it."""


class FollowsIncident(Protocol):
    """A responder whose effect is updated as its incident changes (pages are resolved).

    The engine calls `follow_up` for every succeeded step of that type, with the result the
    step recorded; `ctx.idempotency_key` is then the step's key plus `#<change>`, so a
    replayed resolution is delivered once.
    """

    async def follow_up(
        self, ctx: StepContext, earlier: StepResult, change: IncidentChange
    ) -> StepResult: ...


class RetryPolicy(BaseModel):
    """How a failed, retryable effect is tried again: exponential backoff with jitter.

    Playbook steps set `retries` and `timeout`; these are the defaults and the backoff shape.
    A `ResponderError` with `retry_after_s` (HTTP 429 Retry-After) waits at least that long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    retries: int = Field(default=3, ge=0, description="Attempts after the first one.")
    initial_backoff: Duration = Field(default=timedelta(seconds=0.5))
    max_backoff: Duration = Field(default=timedelta(seconds=30))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ResponderError) and exc.retryable


async def call_with_retries(
    action: Callable[[], Awaitable[ResultT]], policy: RetryPolicy, deadline: float
) -> ResultT:
    """Run `action`, retrying retryable `ResponderError`s by `policy` until `deadline`.

    A non-retryable error, the last attempt's error, or an error when the next wait would pass
    the deadline is raised as is, so the caller records the real reason.
    """

    initial_s = policy.initial_backoff.total_seconds()
    backoff = wait_exponential_jitter(
        multiplier=initial_s, max=policy.max_backoff.total_seconds(), jitter=initial_s
    )

    def wait_s(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        hinted = getattr(error, "retry_after_s", None) or 0.0
        return max(backoff(state), float(hinted))

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(policy.retries + 1)
        | stop_before_delay(max(0.0, deadline - time.monotonic())),
        wait=wait_s,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await action()
    raise AssertionError("unreachable: tenacity reraises the last error")
