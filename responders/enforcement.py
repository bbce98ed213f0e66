"""Enforcing control decisions at the gateway: model servers import this, not the worker.

`Enforcer.check(client_id, model_id)` (asyncio) and `SyncEnforcer.check` (threads: Flask,
gRPC, plain WSGI) answer one question per request: may this client be served now, and if not,
when may it retry? `RateLimitMiddleware` wraps any ASGI app (Starlette, FastAPI) with it.

Cost and staleness. Decisions are read from Redis (`controls_store` layout: the client's
all-models key and its key for the requested model, in one MGET) and cached in the process for
`cache_ttl_s` (1 s by default), for clients with and without a decision alike: a gateway sends
Redis at most one lookup per client per second, not one per request, and a new decision or a
lift takes effect within `cache_ttl_s` (plus the Redis write). Throttled clients are the
exception: their every request is counted in Redis with `limits` (moving window), so all
replicas of a gateway share one count and "30 per minute" holds across them.

Redis unreachable. Decisions already cached keep being enforced (blocks from memory until they
expire, even past `cache_ttl_s`). For everything else `fail_open` decides: True (default)
serves the request, because an outage of the control plane should not take inference down
with it; False refuses it (`allowed=False`, reason `unavailable`, HTTP 503 from the
middleware), for endpoints where serving an attacker is worse than serving nobody. Either way
`stats.unavailable` counts such checks (export it as a metric) and a warning is logged at most
every 10 s. Give the Redis client a short timeout and no retries of its own (`from_url` does:
100 ms, `retry=Retry(NoBackoff(), 0)`; redis-py's default retries take ~10 s per refused
connection) so an unreachable Redis costs a request at most that timeout.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypedDict, Unpack, cast

import redis
import redis.asyncio
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage as AsyncLimitsStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import RedisStorage as LimitsStorage
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from mlwarden.responders.controls_store import DEFAULT_KEY_PREFIX, decode_decision, no_retries
from mlwarden.schemas.control import ControlAction, ControlDecision, control_key

_LOG: Final = logging.getLogger(__name__)
_WARN_EVERY_S: Final = 10.0
_REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError)

DEFAULT_LIMITS_PREFIX: Final = "mlwarden:limits"


class VerdictReason(StrEnum):
    NO_CONTROL = "no_control"
    WITHIN_LIMIT = "within_limit"
    THROTTLED = "throttled"
    BLOCKED = "blocked"
    UNAVAILABLE = "unavailable"
    """Redis could not be reached and nothing was cached: `fail_open` decided."""


@dataclass(frozen=True)
class Verdict:
    """The answer for one request; `retry_after_s` (whole seconds) when it was refused."""

    allowed: bool
    reason: VerdictReason
    retry_after_s: int | None = None
    decision: ControlDecision | None = None


@dataclass
class EnforcerStats:
    """Counters for metrics; `unavailable` = checks answered without Redis (by `fail_open`)."""

    checks: int = 0
    lookups: int = 0
    refused: int = 0
    unavailable: int = 0


def effective_decision(
    decisions: Sequence[ControlDecision | None], now: datetime
) -> ControlDecision | None:
    """The strictest live decision: a block, else the throttle with the lowest limit."""
    live = [
        d
        for d in decisions
        if d is not None
        and d.action is not ControlAction.LIFT
        and d.expires_at is not None
        and d.expires_at > now
    ]
    if not live:
        return None
    return min(
        live,
        key=lambda d: (d.action is not ControlAction.BLOCK, d.limit_per_minute or 0),
    )


def _seconds_until(moment: float, now: float) -> int:
    return max(1, math.ceil(moment - now))


@dataclass(frozen=True)
class _Entry:
    fetched: float
    decisions: tuple[ControlDecision | None, ...]


class EnforcerOptions(TypedDict, total=False):
    """Keyword options of both enforcers (and their `from_url`); defaults in `_EnforcerCore`."""

    key_prefix: str
    limits_prefix: str
    cache_ttl_s: float
    cache_size: int
    fail_open: bool
    clock: Callable[[], float]


class _EnforcerCore:
    """What both enforcers share: keys, the decision cache, verdicts, the failure policy."""

    def __init__(
        self,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        limits_prefix: str = DEFAULT_LIMITS_PREFIX,
        cache_ttl_s: float = 1.0,
        cache_size: int = 100_000,
        fail_open: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prefix = key_prefix
        self.limits_prefix = limits_prefix
        self.cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self.fail_open = fail_open
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str | None], _Entry] = OrderedDict()
        self._last_warning = -math.inf
        self.stats = EnforcerStats()

    def _keys(self, client_id: str, model_id: str | None) -> list[str]:
        keys = [self._prefix + control_key(client_id, None)]
        if model_id is not None:
            keys.append(self._prefix + control_key(client_id, model_id))
        return keys

    def _fresh(self, key: tuple[str, str | None]) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None or time.monotonic() - entry.fetched > self.cache_ttl_s:
            return None
        return entry

    def _remember(self, key: tuple[str, str | None], raws: Sequence[Any]) -> _Entry:
        self.stats.lookups += 1
        entry = _Entry(
            time.monotonic(), tuple(decode_decision(raw, where=f"{key}") for raw in raws)
        )
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    def _lookup_failed(self, key: tuple[str, str | None], exc: BaseException) -> _Entry | None:
        """The stale cache entry to go on with, if any; logs and counts the outage."""
        self._warn(exc)
        return self._cache.get(key)

    def _unavailable(self, exc: BaseException) -> Verdict:
        self._warn(exc)
        self.stats.unavailable += 1
        if self.fail_open:
            return Verdict(True, VerdictReason.UNAVAILABLE)
        self.stats.refused += 1
        return Verdict(False, VerdictReason.UNAVAILABLE, retry_after_s=1)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            policy = "serving (fail open)" if self.fail_open else "refusing (fail closed)"
            _LOG.warning(
                "rate-limit enforcement cannot reach Redis (%s: %s); cached decisions still "
                "apply, other requests: %s. Check the gateway's Redis URL and Redis itself",
                type(exc).__name__,
                exc,
                policy,
            )

    def _blocked(self, decision: ControlDecision, now: float) -> Verdict:
        assert decision.expires_at is not None
        self.stats.refused += 1
        return Verdict(
            False,
            VerdictReason.BLOCKED,
            _seconds_until(decision.expires_at.timestamp(), now),
            decision,
        )

    def _throttled(self, decision: ControlDecision, reset_at: float, now: float) -> Verdict:
        assert decision.expires_at is not None
        self.stats.refused += 1
        retry_at = min(reset_at, decision.expires_at.timestamp())
        return Verdict(False, VerdictReason.THROTTLED, _seconds_until(retry_at, now), decision)

    def _counting(self, decision: ControlDecision) -> tuple[RateLimitItem, str, str]:
        """The limit and its count's identity: a new decision for the client counts afresh."""
        assert decision.limit_per_minute is not None
        item = RateLimitItemPerMinute(decision.limit_per_minute, namespace="mlwarden")
        return item, decision.key, str(int(decision.decided_at.timestamp() * 1000))

    def _precheck(
        self, entry: _Entry | None, now: float
    ) -> Verdict | tuple[ControlDecision, RateLimitItem, str, str]:
        """A final verdict without counting, or the throttle to count the request against."""
        decisions = entry.decisions if entry is not None else ()
        decision = effective_decision(decisions, datetime.fromtimestamp(now, UTC))
        if decision is None:
            return Verdict(True, VerdictReason.NO_CONTROL)
        if decision.action is ControlAction.BLOCK or decision.limit_per_minute == 0:
            return self._blocked(decision, now)
        return (decision, *self._counting(decision))


class Enforcer(_EnforcerCore):
    """Asyncio enforcement over a `redis.asyncio.Redis` client (shared with `limits`)."""

    def __init__(
        self, client: redis.asyncio.Redis[Any], **options: Unpack[EnforcerOptions]
    ) -> None:
        super().__init__(**options)
        self._redis = client
        pool = cast(Any, client.connection_pool)  # limits types its options as scalars
        storage = AsyncLimitsStorage(
            "async+redis://",
            implementation="redispy",
            connection_pool=pool,
            key_prefix=self.limits_prefix,
        )
        self._limiter = AsyncMovingWindow(storage)

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.1, **options: Unpack[EnforcerOptions]
    ) -> Enforcer:
        """An enforcer with its own client; `timeout_s` bounds what a Redis outage costs."""
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=no_retries()
        )
        return cls(client, **options)

    async def aclose(self) -> None:
        await cast(Any, self._redis).aclose()  # redis ≥5; types-redis lags

    async def check(self, client_id: str, model_id: str | None = None) -> Verdict:
        """May `client_id` be served now (on `model_id`)? Counts the request if throttled."""
        self.stats.checks += 1
        key = (client_id, model_id)
        entry = self._fresh(key)
        if entry is None:
            try:
                entry = self._remember(key, await self._redis.mget(self._keys(*key)))
            except _REDIS_ERRORS as exc:
                entry = self._lookup_failed(key, exc)
                if entry is None:
                    return self._unavailable(exc)
        now = self._clock()
        step = self._precheck(entry, now)
        if isinstance(step, Verdict):
            return step
        decision, item, *ids = step
        try:
            if await self._limiter.hit(item, *ids):
                return Verdict(True, VerdictReason.WITHIN_LIMIT, decision=decision)
            stats = await self._limiter.get_window_stats(item, *ids)
        except _REDIS_ERRORS as exc:
            return self._unavailable(exc)
        return self._throttled(decision, stats.reset_time, now)


class SyncEnforcer(_EnforcerCore):
    """The same enforcement over a blocking `redis.Redis` client, for threaded servers."""

    def __init__(self, client: redis.Redis[Any], **options: Unpack[EnforcerOptions]) -> None:
        super().__init__(**options)
        self._redis = client
        storage = LimitsStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=self.limits_prefix
        )
        self._limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.1, **options: Unpack[EnforcerOptions]
    ) -> SyncEnforcer:
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=SyncRetry(NoBackoff(), 0),
        )
        return cls(client, **options)

    def close(self) -> None:
        self._redis.close()

    def check(self, client_id: str, model_id: str | None = None) -> Verdict:
        """May `client_id` be served now (on `model_id`)? Counts the request if throttled."""
        self.stats.checks += 1
        key = (client_id, model_id)
        entry = self._fresh(key)
        if entry is None:
            try:
                entry = self._remember(key, self._redis.mget(self._keys(*key)))
            except _REDIS_ERRORS as exc:
                entry = self._lookup_failed(key, exc)
                if entry is None:
                    return self._unavailable(exc)
        now = self._clock()
        step = self._precheck(entry, now)
        if isinstance(step, Verdict):
            return step
        decision, item, *ids = step
        try:
            if self._limiter.hit(item, *ids):
                return Verdict(True, VerdictReason.WITHIN_LIMIT, decision=decision)
            stats = self._limiter.get_window_stats(item, *ids)
        except _REDIS_ERRORS as exc:
            return self._unavailable(exc)
        return self._throttled(decision, stats.reset_time, now)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimitMiddleware:
    """Pure ASGI middleware: 429 + Retry-After for throttled and blocked clients.

    `app.add_middleware(RateLimitMiddleware, enforcer=enforcer)` in Starlette/FastAPI, or wrap
    any ASGI app. The client id comes from `client_header` (an account/key *id* header set by
    your auth layer, never the key itself); the model from `model_header` or a fixed
    `model_id`. Requests without a client id pass through (authentication is not this layer's
    job). Only HTTP is checked; lifespan and websocket scopes pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        enforcer: Enforcer,
        *,
        client_header: str = "x-api-key-id",
        model_header: str | None = None,
        model_id: str | None = None,
    ) -> None:
        self.app = app
        self.enforcer = enforcer
        self._client_header = client_header.lower().encode("latin-1")
        self._model_header = model_header.lower().encode("latin-1") if model_header else None
        self._model_id = model_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {k.lower(): v for k, v in scope.get("headers", ())}
        client = headers.get(self._client_header)
        if not client:
            await self.app(scope, receive, send)
            return
        model = self._model_id
        if self._model_header is not None and self._model_header in headers:
            model = headers[self._model_header].decode("latin-1")
        verdict = await self.enforcer.check(client.decode("latin-1"), model)
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        await _refuse(send, verdict)


async def _refuse(send: Send, verdict: Verdict) -> None:
    status = 503 if verdict.reason is VerdictReason.UNAVAILABLE else 429
    retry_after = verdict.retry_after_s or 1
    detail = {
        VerdictReason.BLOCKED: "this client is blocked",
        VerdictReason.THROTTLED: "this client is over its rate limit",
        VerdictReason.UNAVAILABLE: "rate-limit enforcement is unavailable",
    }.get(verdict.reason, "refused")
    body: dict[str, Any] = {
        "error": verdict.reason.value,
        "detail": detail,
        "retry_after_s": retry_after,
    }
    if verdict.decision is not None:
        body["limit_per_minute"] = verdict.decision.limit_per_minute
        body["expires_at"] = (
            verdict.decision.expires_at.isoformat() if verdict.decision.expires_at else None
        )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
