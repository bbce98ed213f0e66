"""`mlwarden controls list|lift|sync` against the real broker and a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from mlwarden.responders.controls_store import ControlsStore, no_retries, read_topic
from mlwarden.schemas.control import ControlAction, ControlDecision
from mlwarden.streams.broker import EmbeddedBroker, free_port
from mlwarden.streams.cli_controls import controls_app

from .redis_server import RedisServer, redis_server
from .workers import isolated_kafka

__all__ = ["redis_server"]
pytestmark = pytest.mark.integration


def decision(client: str, action: str, **extra: Any) -> ControlDecision:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "client_id": client,
        "action": action,
        "decided_at": now,
        "expires_at": now + timedelta(minutes=45),
        "reason": "boundary probing",
        "incident_id": "inc-7",
    }
    return ControlDecision(**(fields | extra))


def in_store(url: str, prefix: str, *decisions: ControlDecision) -> list[ControlDecision]:
    """Apply `decisions`, then return what the store lists (one event loop, one client)."""

    async def run() -> list[ControlDecision]:
        client: Redis[Any] = Redis.from_url(url, retry=no_retries())
        store = ControlsStore(client, prefix)
        for d in decisions:
            await store.apply(d, now=datetime.now(UTC))
        listed = await store.list()
        await client.aclose()
        return listed

    return asyncio.run(run())


@pytest.fixture
def env(broker: EmbeddedBroker, redis_server: RedisServer) -> dict[str, str]:
    kafka = isolated_kafka(broker.bootstrap, partitions=2)
    return {
        "MLWARDEN_KAFKA__BOOTSTRAP": broker.bootstrap,
        "MLWARDEN_KAFKA__TOPICS__CONTROLS": kafka.topics.controls,
        "MLWARDEN_RATE_LIMIT__REDIS_URL": redis_server.url,
        "MLWARDEN_RATE_LIMIT__KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
    }


def test_list_shows_the_decisions_in_force(env: dict[str, str]) -> None:
    url, prefix = env["MLWARDEN_RATE_LIMIT__REDIS_URL"], env["MLWARDEN_RATE_LIMIT__KEY_PREFIX"]
    in_store(
        url,
        prefix,
        decision("acct-1", "throttle", limit_per_minute=30),
        decision("acct-2", "block", model_id="fraud-v1"),
    )

    result = CliRunner().invoke(controls_app, ["list"], env=env)

    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "acct-" in line]
    assert len(rows) == 2
    assert all(w in rows[0] for w in ("acct-1", "(all)", "throttle", "30", "44m", "inc-7"))
    assert all(w in rows[1] for w in ("acct-2", "fraud-v1", "block", "boundary probing"))


def test_lift_publishes_a_lift_and_removes_every_scope_from_redis(env: dict[str, str]) -> None:
    url, prefix = env["MLWARDEN_RATE_LIMIT__REDIS_URL"], env["MLWARDEN_RATE_LIMIT__KEY_PREFIX"]
    in_store(
        url,
        prefix,
        decision("acct-1", "block"),
        decision("acct-1", "block", model_id="llm"),
        decision("acct-2", "block"),
    )

    result = CliRunner().invoke(controls_app, ["lift", "acct-1", "--reason", "fp"], env=env)

    assert result.exit_code == 0, result.output
    assert "lifted acct-1 on all models" in result.stdout
    assert "lifted acct-1 on llm" in result.stdout
    assert [d.client_id for d in in_store(url, prefix)] == ["acct-2"]
    records = asyncio.run(
        read_topic(env["MLWARDEN_KAFKA__BOOTSTRAP"], env["MLWARDEN_KAFKA__TOPICS__CONTROLS"])
    )
    lifts = [r.decision for r in records if r.decision is not None]
    assert {(d.action, d.model_id, d.reason) for d in lifts} == {
        (ControlAction.LIFT, None, "fp"),
        (ControlAction.LIFT, "llm", "fp"),
    }


def test_sync_rebuilds_redis_from_the_topic(env: dict[str, str]) -> None:
    url, prefix = env["MLWARDEN_RATE_LIMIT__REDIS_URL"], env["MLWARDEN_RATE_LIMIT__KEY_PREFIX"]
    in_store(url, prefix, decision("acct-9", "block"))
    assert CliRunner().invoke(controls_app, ["lift", "acct-9"], env=env).exit_code == 0
    # Redis restored from an old snapshot: holds a block the topic has since lifted.
    in_store(url, prefix, decision("acct-9", "block", decided_at=datetime(2020, 1, 1, tzinfo=UTC)))

    result = CliRunner().invoke(controls_app, ["sync"], env=env)

    assert result.exit_code == 0, result.output
    assert "1 lifted or expired" in result.stdout
    assert in_store(url, prefix) == []


def test_an_unreachable_redis_is_named_with_what_to_do(env: dict[str, str]) -> None:
    closed = {**env, "MLWARDEN_RATE_LIMIT__REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = CliRunner().invoke(controls_app, ["list"], env=closed)
    assert result.exit_code == 1
    assert "unreachable" in result.output
    assert "MLWARDEN_RATE_LIMIT__REDIS_URL" in result.output
