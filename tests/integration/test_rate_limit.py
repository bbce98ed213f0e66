"""The rate_limit responder against the real broker and a real redis-server.

Each test has its own topics (`isolated_kafka`) and Redis key prefix, so they share one broker
and one Redis. Outage tests run a Redis of their own on a fixed port and stop/restart it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from mlwarden.responders.base import StepContext
from mlwarden.responders.controls_store import (
    ApplyOutcome,
    ControlsStore,
    no_retries,
    read_topic,
    sync_from_topic,
)
from mlwarden.responders.params import RateLimitParams, RateLimitScope
from mlwarden.responders.rate_limit import RateLimitResponder
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.control import ControlAction, ControlDecision
from mlwarden.schemas.errors import ResponderError
from mlwarden.streams.broker import EmbeddedBroker, free_port

from .redis_server import RedisServer, redis_server, running_redis
from .workers import isolated_kafka

__all__ = ["redis_server"]
pytestmark = pytest.mark.integration
T = TypeVar("T")


def make_ctx(key: str | None = None, **changes: Any) -> StepContext:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "fp-1",
        "kind": AlertKind.EXTRACTION,
        "detector": "prada",
        "severity": Severity.CRITICAL,
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": f"c-{uuid.uuid4().hex[:6]}",
        "detected_at": now,
        "emitted_at": now,
        "score": 0.4,
        "threshold": 0.9,
        "summary": "boundary probing",
    }
    return StepContext(
        idempotency_key=key or f"inc-{uuid.uuid4().hex[:6]}/extraction/0",
        incident_id="inc-1",
        playbook="extraction",
        alert=Alert(**(fields | changes)),
    )


@dataclass
class Controls:
    """One test's controls topic, a publisher onto it, and a store under its own prefix."""

    bootstrap: str
    topic: str
    publish: Callable[[bytes, bytes], Awaitable[None]]
    prefix: str

    def store(self, url: str) -> ControlsStore:
        client: Redis[Any] = Redis.from_url(url, socket_connect_timeout=1, retry=no_retries())
        return ControlsStore(client, self.prefix)


@pytest.fixture
async def controls(broker: EmbeddedBroker) -> AsyncIterator[Controls]:
    topic = isolated_kafka(broker.bootstrap, partitions=2).topics.controls
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()

    async def publish(key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, key=key, value=value)

    try:
        yield Controls(broker.bootstrap, topic, publish, f"t{uuid.uuid4().hex[:8]}:")
    finally:
        await producer.stop()


async def poll(check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_a_decision_lands_on_the_topic_then_in_redis(
    controls: Controls, redis_server: RedisServer
) -> None:
    store = controls.store(redis_server.url)
    responder = RateLimitResponder(controls.publish, store)
    ctx = make_ctx()
    client = ctx.alert.client_id
    params = RateLimitParams(limit_per_minute=30, duration=timedelta(minutes=10))

    result = await responder(params, ctx)

    (report,) = result["decisions"]
    assert report["client_id"] == client
    assert (report["action"], report["limit_per_minute"]) == ("throttle", 30)
    assert report["written_to"] == ["controls_topic", "redis"]
    assert result["redis"] == f"127.0.0.1:{redis_server.port}/0"
    (record,) = await read_topic(controls.bootstrap, controls.topic)
    assert record.key == client.encode()
    assert record.decision == await store.get(client)
    assert record.decision is not None
    assert record.decision.decision_id == ctx.idempotency_key
    assert record.decision.expires_at == record.decision.decided_at + timedelta(minutes=10)
    assert report["expires_at"] == record.decision.expires_at.isoformat()
    ttl_ms = await store._redis.pttl(store.redis_key(client))
    assert 590_000 < ttl_ms <= 600_000, "Redis expires the key with the decision"
    await store.aclose()


async def test_the_same_step_twice_makes_one_decision(
    controls: Controls, redis_server: RedisServer
) -> None:
    store = controls.store(redis_server.url)
    ticks = iter(datetime.now(UTC) + timedelta(seconds=s) for s in range(100))
    responder = RateLimitResponder(controls.publish, store, clock=lambda: next(ticks))
    again = RateLimitResponder(controls.publish, store, clock=lambda: next(ticks))  # a restart
    ctx = make_ctx()
    params = RateLimitParams(action=ControlAction.BLOCK, duration=timedelta(minutes=5))

    first = await responder(params, ctx)
    second = await again(params, ctx)

    assert second["decisions"][0]["outcome"] == "already_applied"
    assert second["decisions"][0]["expires_at"] == first["decisions"][0]["expires_at"]
    records = await read_topic(controls.bootstrap, controls.topic)
    assert len(records) == 1
    stored = await store.get(ctx.alert.client_id)
    assert stored is not None
    assert stored.expires_at is not None
    assert stored.expires_at.isoformat() == first["decisions"][0]["expires_at"]
    await store.aclose()


async def test_a_decision_lapses_by_itself(controls: Controls, redis_server: RedisServer) -> None:
    store = controls.store(redis_server.url)
    responder = RateLimitResponder(controls.publish, store)
    ctx = make_ctx()
    params = RateLimitParams(action=ControlAction.BLOCK, duration=timedelta(seconds=1))
    await responder(params, ctx)
    assert await store.get(ctx.alert.client_id) is not None

    async def gone() -> bool:
        return await store.get(ctx.alert.client_id) is None

    await poll(gone, 5.0, "the 1 s block to expire in Redis")
    await store.aclose()


async def test_cluster_scope_and_a_stricter_live_decision_is_kept(
    controls: Controls, redis_server: RedisServer
) -> None:
    store = controls.store(redis_server.url)
    responder = RateLimitResponder(controls.publish, store)
    sybils = [f"s-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    block = RateLimitParams(action=ControlAction.BLOCK, duration=timedelta(hours=2))
    await responder(block, make_ctx(client_id=sybils[0]))

    throttle = RateLimitParams(
        limit_per_minute=10, duration=timedelta(hours=1), scope=RateLimitScope.CLUSTER
    )
    result = await responder(throttle, make_ctx(client_id=None, evidence={"client_ids": sybils}))

    outcomes = {r["client_id"]: r["outcome"] for r in result["decisions"]}
    assert outcomes == {sybils[0]: "kept_existing", sybils[1]: "applied", sybils[2]: "applied"}
    kept = await store.get(sybils[0])
    assert kept is not None
    assert kept.action is ControlAction.BLOCK
    listed = await store.list()
    assert {d.client_id for d in listed} == set(sybils)
    await store.aclose()


async def test_redis_down_the_topic_has_it_the_step_retries_and_sync_restores_it(
    controls: Controls, tmp_path: Path
) -> None:
    port = free_port()
    with running_redis(port, tmp_path):
        pass  # up once and gone: a Redis that is down when the step runs
    store = controls.store(f"redis://127.0.0.1:{port}/0")
    responder = RateLimitResponder(controls.publish, store)
    ctx = make_ctx()
    client = ctx.alert.client_id
    params = RateLimitParams(limit_per_minute=5, duration=timedelta(minutes=30))

    with pytest.raises(ResponderError) as raised:
        await responder(params, ctx)
    assert raised.value.retryable
    assert f"127.0.0.1:{port}/0" in str(raised.value)
    with pytest.raises(ResponderError):
        await responder(params, ctx)  # the engine's retry while Redis is still down

    records = await read_topic(controls.bootstrap, controls.topic)
    assert len(records) == 2
    assert records[0].value == records[1].value, "a retry re-publishes the same decision"
    on_topic = records[0].decision
    assert on_topic is not None

    with running_redis(port, tmp_path):
        report = await sync_from_topic(
            controls.bootstrap, controls.topic, store, now=datetime.now(UTC)
        )
        assert report.count(ApplyOutcome.WRITTEN) == 1
        assert await store.get(client) == on_topic

        result = await responder(params, ctx)  # the retry once Redis is back
        assert result["decisions"][0]["outcome"] == "already_applied"
        assert len(await read_topic(controls.bootstrap, controls.topic)) == 2
        await store.aclose()


async def test_sync_applies_lifts_and_keeps_newer_redis_decisions(
    controls: Controls, redis_server: RedisServer
) -> None:
    store = controls.store(redis_server.url)
    now = datetime.now(UTC)

    def made(client: str, action: str, at: datetime, **extra: Any) -> ControlDecision:
        expires = None if action == "lift" else at + timedelta(hours=1)
        return ControlDecision(
            client_id=client, action=action, decided_at=at, expires_at=expires, reason="r", **extra
        )

    lifted, newer_in_redis = f"l-{uuid.uuid4().hex[:6]}", f"n-{uuid.uuid4().hex[:6]}"
    await store.apply(made(lifted, "block", now), now=now)
    await store.apply(made(newer_in_redis, "block", now + timedelta(seconds=5)), now=now)
    for decision in (
        made(lifted, "block", now),
        made(lifted, "lift", now + timedelta(seconds=1)),
        made(newer_in_redis, "throttle", now, limit_per_minute=3),
    ):
        await controls.publish(decision.key.encode(), decision.model_dump_json().encode())
    await controls.publish(b"junk", b"not json")

    report = await sync_from_topic(controls.bootstrap, controls.topic, store, now=now)

    assert (report.records, report.unreadable) == (4, 1)
    assert report.count(ApplyOutcome.DELETED) == 1
    assert report.count(ApplyOutcome.STALE) == 1
    assert await store.get(lifted) is None
    kept = await store.get(newer_in_redis)
    assert kept is not None
    assert kept.action is ControlAction.BLOCK
    await store.aclose()
