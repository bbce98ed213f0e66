"""The `rate_limit` step: throttle or block a client (or a sybil cluster) until it expires.

Each decision goes to the compacted controls topic first and to Redis second. The topic is the
record of truth (a gateway or `mlwarden controls sync` rebuilds Redis from it); Redis is what
gateways read per request. So when Redis is down the decision is already recorded, the step
fails *retryably* naming Redis, and a retry re-publishes the very same record (same key, same
value: compaction keeps one) and writes Redis again.

Idempotent by the step's key: the decision's `decision_id` is `ctx.idempotency_key`, and its
`decided_at` is taken from the earlier decision with that id found in Redis (or remembered in
this process while Redis is down), so a retried or replayed step neither extends the expiry nor
adds a second decision; when Redis already holds it, nothing is published at all.

A step never loosens a live control it did not make: when the client already has a decision
that is at least as strict and lasts at least as long, that one is kept and reported.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mlwarden.responders.base import StepContext, StepResult
from mlwarden.responders.controls_store import (
    DEFAULT_KEY_PREFIX,
    ApplyOutcome,
    ControlsStore,
    no_retries,
)
from mlwarden.responders.params import RateLimitParams, RateLimitScope
from mlwarden.schemas.control import ControlAction, ControlDecision, control_key
from mlwarden.schemas.errors import ResponderError

Publish = Callable[[bytes, bytes], Awaitable[None]]
"""Sends (key, value) to the controls topic and returns once the broker acknowledged it."""

Clock = Callable[[], datetime]

_REMEMBERED_STEPS: Final = 10_000


class RateLimitSettings(BaseModel):
    """Where decisions are written for gateways (`MLWARDEN_RATE_LIMIT__…`)."""

    model_config = ConfigDict(extra="forbid")

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// URL; secret because it may hold a password.",
    )
    key_prefix: str = Field(default=DEFAULT_KEY_PREFIX, min_length=1)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    socket_timeout_s: float = Field(default=2.0, gt=0, description="Per Redis command.")

    def redis_client(self) -> Redis[Any]:
        """A client with these timeouts (no connection is made until the first command)."""
        return Redis.from_url(
            self.redis_url.get_secret_value(),
            socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.socket_timeout_s,
            retry=no_retries(),
        )

    def store(self) -> ControlsStore:
        return ControlsStore(self.redis_client(), self.key_prefix)


class Outcome(StrEnum):
    """What happened to one target client's decision."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    """This step's decision was already in Redis (a retry or replay): nothing re-sent."""
    KEPT_EXISTING = "kept_existing"
    """The client has a live decision at least as strict and as long: left in force."""
    SUPERSEDED = "superseded"
    """A newer decision was made for the client since this step first decided."""
    EXPIRED = "expired"
    """The decision lapsed before it reached Redis (a very late retry): published only."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def at_least_as_strict(a: ControlDecision, b: ControlDecision) -> bool:
    """Whether `a` refuses every request `b` refuses (block ⊇ any throttle ⊇ looser throttle)."""
    if a.action is ControlAction.BLOCK:
        return True
    if b.action is ControlAction.BLOCK or a.action is not ControlAction.THROTTLE:
        return False
    assert a.limit_per_minute is not None
    assert b.limit_per_minute is not None
    return a.limit_per_minute <= b.limit_per_minute


def target_clients(params: RateLimitParams, ctx: StepContext) -> list[str]:
    """The client ids the step limits, in a stable order without repeats."""
    alert = ctx.alert
    own = params.client_id or alert.client_id
    if params.scope is RateLimitScope.CLIENT:
        if not own:
            raise ResponderError(
                f"rate_limit: alert {alert.alert_id} ({alert.detector}) names no client; set "
                "the step's client_id, or use scope: cluster for sybil alerts",
                retryable=False,
            )
        return [own]
    listed = alert.evidence.get("client_ids")
    if not isinstance(listed, list) or not all(isinstance(c, str) and c for c in listed):
        raise ResponderError(
            f"rate_limit scope cluster: alert {alert.alert_id} ({alert.detector}) has no "
            "evidence.client_ids list of client ids; cluster scope fits sybil alerts "
            "(blacklight), use scope: client for others",
            retryable=False,
        )
    return list(dict.fromkeys([*listed, *([own] if own else [])]))


def build_decisions(
    params: RateLimitParams, ctx: StepContext, decided_at: datetime
) -> list[ControlDecision]:
    """One decision per target client, all decided at `decided_at` (pure)."""
    alert = ctx.alert
    return [
        ControlDecision(
            client_id=client_id,
            action=params.action,
            limit_per_minute=params.limit_per_minute,
            model_id=alert.model_id if params.model_scoped else None,
            decided_at=decided_at,
            expires_at=decided_at + params.duration,
            reason=params.reason or alert.summary,
            incident_id=ctx.incident_id,
            decision_id=ctx.idempotency_key,
        )
        for client_id in target_clients(params, ctx)
    ]


class RateLimitResponder:
    """Publishes control decisions to the controls topic, then writes them to Redis.

    `publish(key, value)` must return only once the broker acknowledged the record (the worker
    awaits the future a Faust `topic.send` returns). `clock` gives `decided_at` (UTC-aware).
    """

    def __init__(self, publish: Publish, store: ControlsStore, *, clock: Clock = _utc_now) -> None:
        self._publish = publish
        self._store = store
        self._clock = clock
        self._decided: OrderedDict[str, datetime] = OrderedDict()
        """decided_at per idempotency key, for retries while Redis cannot tell us (bounded)."""

    async def __call__(self, params: RateLimitParams, ctx: StepContext) -> StepResult:
        try:
            async with asyncio.timeout(ctx.remaining_s()):
                return await self._run(params, ctx)
        except TimeoutError:
            raise ResponderError(
                f"rate_limit for incident {ctx.incident_id}: the step's deadline passed while "
                f"reaching the controls topic or Redis at {self._store.location}",
                retryable=True,
            ) from None

    async def _run(self, params: RateLimitParams, ctx: StepContext) -> StepResult:
        clients = target_clients(params, ctx)
        model_id = ctx.alert.model_id if params.model_scoped else None
        existing, redis_error = await self._read_existing(clients, model_id)
        decided_at = self._decided_at(ctx.idempotency_key, existing.values())
        decisions = build_decisions(params, ctx, decided_at)

        reports: list[dict[str, Any]] = []
        to_write: list[tuple[ControlDecision, dict[str, Any]]] = []
        for decision in decisions:
            held = existing.get(decision.key)
            outcome = _without_writing(decision, held)
            report = _report(decision, outcome or Outcome.APPLIED, held)
            reports.append(report)
            if outcome is None:
                await self._publish_one(decision, ctx)
                report["written_to"].append("controls_topic")
                to_write.append((decision, report))
            elif outcome is Outcome.ALREADY_APPLIED:
                report["written_to"] = ["controls_topic", "redis"]

        failed: list[str] = []
        for decision, report in to_write:
            try:
                applied = await self._store.apply(decision, now=self._clock())
            except (RedisError, OSError) as exc:
                failed.append(decision.client_id)
                redis_error = exc
                continue
            if applied is ApplyOutcome.WRITTEN:
                report["written_to"].append("redis")
            elif applied is ApplyOutcome.STALE:
                report["outcome"] = Outcome.SUPERSEDED.value
            else:
                report["outcome"] = Outcome.EXPIRED.value
        if failed:
            raise ResponderError(
                f"rate_limit: the decisions for {', '.join(failed)} are on the controls topic "
                f"but not in Redis at {self._store.location} ({type(redis_error).__name__}: "
                f"{redis_error}), so gateways do not enforce them yet. Will retry; if Redis "
                "stays down, restore it and run `mlwarden controls sync`",
                retryable=True,
            )
        return {"decisions": reports, "redis": self._store.location}

    async def _read_existing(
        self, clients: Sequence[str], model_id: str | None
    ) -> tuple[dict[str, ControlDecision | None], BaseException | None]:
        """Live decisions of the targets; empty (and the error) when Redis is unreachable,
        which must not stop the decision from reaching the topic."""
        try:
            found = await self._store.get_many(control_key(c, model_id) for c in clients)
        except (RedisError, OSError) as exc:
            return {}, exc
        return found, None

    def _decided_at(self, step_key: str, existing: Any) -> datetime:
        ours = [d.decided_at for d in existing if d is not None and d.decision_id == step_key]
        decided_at = min(ours) if ours else self._decided.get(step_key) or self._clock()
        self._decided[step_key] = decided_at
        self._decided.move_to_end(step_key)
        while len(self._decided) > _REMEMBERED_STEPS:
            self._decided.popitem(last=False)
        return decided_at

    async def _publish_one(self, decision: ControlDecision, ctx: StepContext) -> None:
        try:
            await self._publish(decision.key.encode(), decision.model_dump_json().encode())
        except ResponderError:
            raise
        except Exception as exc:  # a publisher fails in its broker client's many ways
            raise ResponderError(
                f"rate_limit for incident {ctx.incident_id}: could not publish the decision for "
                f"{decision.client_id} to the controls topic ({type(exc).__name__}: {exc}); "
                "nothing was enforced. Will retry; check the Kafka bootstrap and the broker",
                retryable=True,
            ) from exc


def _without_writing(decision: ControlDecision, held: ControlDecision | None) -> Outcome | None:
    """Why `decision` needs no publish or write given the live one `held`, or None to go on."""
    if held is None:
        return None
    if held == decision:
        return Outcome.ALREADY_APPLIED
    if held.decision_id != decision.decision_id and held.decided_at > decision.decided_at:
        return Outcome.SUPERSEDED
    if held.expires_at is None or decision.expires_at is None:  # a lift stored by hand
        return None
    if (
        held.decision_id != decision.decision_id
        and at_least_as_strict(held, decision)
        and held.expires_at >= decision.expires_at
    ):
        return Outcome.KEPT_EXISTING
    return None


def _report(
    decision: ControlDecision, outcome: Outcome, held: ControlDecision | None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "client_id": decision.client_id,
        "model_id": decision.model_id,
        "action": decision.action.value,
        "limit_per_minute": decision.limit_per_minute,
        "decided_at": decision.decided_at.isoformat(),
        "expires_at": decision.expires_at.isoformat() if decision.expires_at else None,
        "outcome": outcome.value,
        "written_to": [],
    }
    if outcome in (Outcome.KEPT_EXISTING, Outcome.SUPERSEDED) and held is not None:
        report["in_force"] = {
            "action": held.action.value,
            "limit_per_minute": held.limit_per_minute,
            "expires_at": held.expires_at.isoformat() if held.expires_at else None,
            "decision_id": held.decision_id,
        }
    return report
