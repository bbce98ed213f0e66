"""Gateway enforcement on a real redis-server: middleware, plain calls, shared counts, outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlwarden.responders.controls_store import ControlsStore, no_retries
from mlwarden.responders.enforcement import (
    Enforcer,
    RateLimitMiddleware,
    SyncEnforcer,
    VerdictReason,
)
from mlwarden.schemas.control import ControlAction, ControlDecision
from mlwarden.streams.broker import free_port

from .redis_server import RedisServer, redis_server, running_redis

__all__ = ["redis_server"]
pytestmark = pytest.mark.integration


def decision(client: str, action: str, limit: int | None = None, **extra: Any) -> ControlDecision:
    now = datetime.now(UTC)
    return ControlDecision(
        client_id=client,
        action=action,
        limit_per_minute=limit,
        decided_at=now,
        expires_at=now + timedelta(minutes=10),
        reason="detected",
        **extra,
    )


class Prefixes:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.controls = f"t{tag}:controls:"
        self.limits = f"t{tag}:limits"


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[tuple[ControlsStore, Prefixes]]:
    prefixes = Prefixes()
    client: Redis[Any] = Redis.from_url(redis_server.url, retry=no_retries())
    yield ControlsStore(client, prefixes.controls), prefixes
    await client.aclose()


def model_server(enforcer: Enforcer, **options: Any) -> Starlette:
    async def score(request: Request) -> JSONResponse:
        return JSONResponse({"prediction": 1})

    app = Starlette(routes=[Route("/v1/score", score, methods=["POST"])])
    app.add_middleware(RateLimitMiddleware, enforcer=enforcer, **options)
    return app


async def test_the_middleware_refuses_blocked_and_over_limit_clients_with_429(
    redis_server: RedisServer, store: tuple[ControlsStore, Prefixes]
) -> None:
    controls, prefixes = store
    now = datetime.now(UTC)
    await controls.apply(decision("blocked", "block"), now=now)
    await controls.apply(decision("throttled", "throttle", 2), now=now)
    await controls.apply(decision("other-model", "block", model_id="llm"), now=now)
    enforcer = Enforcer.from_url(
        redis_server.url, key_prefix=prefixes.controls, limits_prefix=prefixes.limits
    )
    app = model_server(enforcer, model_id="fraud-v1")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:

        async def score(client: str | None) -> httpx.Response:
            headers = {"x-api-key-id": client} if client else {}
            return await http.post("/v1/score", json={"features": [1.0]}, headers=headers)

        blocked = await score("blocked")
        assert blocked.status_code == 429
        assert 590 <= int(blocked.headers["retry-after"]) <= 600
        assert blocked.json()["error"] == "blocked"
        assert "detected" not in blocked.text, "the detection reason is not told to the client"

        assert [(await score("throttled")).status_code for _ in range(3)] == [200, 200, 429]
        over = await score("throttled")
        assert over.json()["error"] == "throttled"
        assert 1 <= int(over.headers["retry-after"]) <= 60

        assert (await score("someone-else")).status_code == 200
        assert (await score("other-model")).status_code == 200, "blocked on llm, not fraud-v1"
        assert (await score(None)).status_code == 200
    assert enforcer.stats.refused == 3
    await enforcer.aclose()


async def test_plain_calls_share_counts_across_gateway_replicas(
    redis_server: RedisServer, store: tuple[ControlsStore, Prefixes]
) -> None:
    controls, prefixes = store
    await controls.apply(decision("c-1", "throttle", 3), now=datetime.now(UTC))
    options: dict[str, Any] = {"key_prefix": prefixes.controls, "limits_prefix": prefixes.limits}
    replica_a = Enforcer.from_url(redis_server.url, **options)
    replica_b = SyncEnforcer.from_url(redis_server.url, **options)

    verdicts = [
        await replica_a.check("c-1"),
        replica_b.check("c-1"),
        await replica_a.check("c-1"),
        replica_b.check("c-1"),
    ]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].reason is VerdictReason.THROTTLED
    assert (await replica_a.check("c-2")).reason is VerdictReason.NO_CONTROL
    await replica_a.aclose()
    replica_b.close()


async def test_a_lift_reaches_the_gateway_within_the_cache_ttl(
    redis_server: RedisServer, store: tuple[ControlsStore, Prefixes]
) -> None:
    controls, prefixes = store
    block = decision("c-1", "block")
    await controls.apply(block, now=datetime.now(UTC))
    enforcer = Enforcer.from_url(redis_server.url, key_prefix=prefixes.controls, cache_ttl_s=0.3)
    assert not (await enforcer.check("c-1")).allowed
    lift = ControlDecision(
        client_id="c-1",
        action=ControlAction.LIFT,
        decided_at=datetime.now(UTC),
        reason="false positive",
    )
    await controls.apply(lift, now=datetime.now(UTC))
    lifted_at = time.monotonic()
    assert not (await enforcer.check("c-1")).allowed, "cached for up to cache_ttl_s"
    while not (await enforcer.check("c-1")).allowed:
        assert time.monotonic() - lifted_at < 2.0, "the lift never reached the gateway"
        await asyncio.sleep(0.02)
    assert enforcer.stats.lookups == 2
    await enforcer.aclose()


async def test_redis_unreachable_fails_open_or_closed_but_keeps_cached_blocks(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with running_redis(port, tmp_path):
        client: Redis[Any] = Redis.from_url(url, retry=no_retries())
        await ControlsStore(client).apply(decision("bad", "block"), now=datetime.now(UTC))
        await client.aclose()
        open_gateway = Enforcer.from_url(url, cache_ttl_s=0.0)
        assert not (await open_gateway.check("bad")).allowed
    closed_gateway = Enforcer.from_url(url, fail_open=False)

    started = time.perf_counter()
    unknown = await open_gateway.check("unknown")
    assert time.perf_counter() - started < 0.5, "an outage must not stall requests"
    assert (unknown.allowed, unknown.reason) == (True, VerdictReason.UNAVAILABLE)
    still_blocked = await open_gateway.check("bad")
    assert (still_blocked.allowed, still_blocked.reason) == (False, VerdictReason.BLOCKED)
    assert open_gateway.stats.unavailable == 1

    app = model_server(closed_gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:
        refused = await http.post("/v1/score", headers={"x-api-key-id": "anyone"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "unavailable"
    await open_gateway.aclose()
    await closed_gateway.aclose()
