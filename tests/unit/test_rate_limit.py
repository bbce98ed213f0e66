"""The rate_limit responder's pure parts: targets, decisions, expiry, strictness, idempotency.

The responder-level tests point its Redis client at a closed port: a real connection refusal,
so they exercise the "Redis down" path without a server (the integration tests use a real one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from mlwarden.responders.base import StepContext
from mlwarden.responders.controls_store import (
    ControlsStore,
    TopicRecord,
    latest_decisions,
    no_retries,
)
from mlwarden.responders.enforcement import effective_decision
from mlwarden.responders.params import RateLimitParams, RateLimitScope
from mlwarden.responders.rate_limit import (
    RateLimitResponder,
    at_least_as_strict,
    build_decisions,
    target_clients,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.control import KEY_SEPARATOR, ControlAction, ControlDecision
from mlwarden.schemas.errors import ResponderError
from mlwarden.streams.broker import free_port

T0 = datetime(2026, 11, 23, 14, 5, tzinfo=UTC)


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "fp-1",
        "kind": AlertKind.EXTRACTION,
        "detector": "prada",
        "severity": Severity.CRITICAL,
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": "c-42",
        "detected_at": T0,
        "emitted_at": T0,
        "score": 0.4,
        "threshold": 0.9,
        "summary": "client c-42 probes the decision boundary",
    }
    return Alert(**(fields | changes))


def make_ctx(key: str = "inc-1/extraction/0", **alert: Any) -> StepContext:
    return StepContext(
        idempotency_key=key, incident_id="inc-1", playbook="extraction", alert=make_alert(**alert)
    )


def decision(action: str = "throttle", limit: int | None = 30, **changes: Any) -> ControlDecision:
    fields: dict[str, Any] = {
        "client_id": "c-42",
        "action": action,
        "limit_per_minute": limit,
        "decided_at": T0,
        "expires_at": T0 + timedelta(hours=1),
        "reason": "r",
    }
    return ControlDecision(**(fields | changes))


THROTTLE = RateLimitParams(limit_per_minute=30, duration=timedelta(minutes=10))


def test_a_decision_expires_after_its_duration_and_carries_the_step_and_incident() -> None:
    (made,) = build_decisions(THROTTLE, make_ctx(), T0)
    assert made.expires_at == T0 + timedelta(minutes=10)
    assert made.decided_at == T0
    assert (made.action, made.limit_per_minute, made.model_id) == ("throttle", 30, None)
    assert (made.decision_id, made.incident_id) == ("inc-1/extraction/0", "inc-1")
    assert made.reason == "client c-42 probes the decision boundary"
    assert made.key == "c-42"


def test_model_scoped_decisions_have_their_own_topic_key() -> None:
    params = RateLimitParams(action=ControlAction.BLOCK, model_scoped=True, reason="probing")
    (made,) = build_decisions(params, make_ctx(), T0)
    assert made.model_id == "fraud-v1"
    assert made.key == f"c-42{KEY_SEPARATOR}fraud-v1"
    assert made.reason == "probing"


def test_cluster_scope_limits_every_listed_client_once() -> None:
    ctx = make_ctx(evidence={"client_ids": ["s-1", "s-2", "c-42", "s-1"]})
    params = RateLimitParams(action=ControlAction.BLOCK, scope=RateLimitScope.CLUSTER)
    assert target_clients(params, ctx) == ["s-1", "s-2", "c-42"]
    assert [d.client_id for d in build_decisions(params, ctx, T0)] == ["s-1", "s-2", "c-42"]


@pytest.mark.parametrize(
    ("params", "alert"),
    [
        (THROTTLE, {"client_id": None}),
        (RateLimitParams(action=ControlAction.BLOCK, scope=RateLimitScope.CLUSTER), {}),
        (
            RateLimitParams(action=ControlAction.BLOCK, scope=RateLimitScope.CLUSTER),
            {"evidence": {"client_ids": "c-1"}},
        ),
    ],
)
def test_a_step_without_targets_fails_for_good(params: RateLimitParams, alert: Any) -> None:
    with pytest.raises(ResponderError) as raised:
        target_clients(params, make_ctx(**alert))
    assert not raised.value.retryable


def test_strictness_orders_block_then_lower_limits() -> None:
    block, tight, loose = decision("block", None), decision(limit=5), decision(limit=50)
    assert at_least_as_strict(block, tight)
    assert at_least_as_strict(tight, loose)
    assert at_least_as_strict(tight, tight)
    assert not at_least_as_strict(loose, tight)
    assert not at_least_as_strict(tight, block)


def test_the_gateway_enforces_the_strictest_live_decision() -> None:
    now = T0 + timedelta(minutes=1)
    expired_block = decision("block", None, expires_at=T0 + timedelta(seconds=30))
    assert effective_decision([decision(limit=50), decision(limit=5)], now) == decision(limit=5)
    assert effective_decision([decision(limit=5), decision("block", None)], now) == decision(
        "block", None
    )
    assert effective_decision([expired_block, None], now) is None
    assert effective_decision([expired_block, decision(limit=9)], now) == decision(limit=9)


def test_topic_replay_keeps_the_newest_decision_per_key_not_the_last_offset() -> None:
    older, newer = decision(limit=5), decision(limit=9, decided_at=T0 + timedelta(seconds=1))
    records = [
        TopicRecord(0, 0, b"c-42", b"{}", newer),
        TopicRecord(0, 1, b"c-42", b"{}", older),  # a late retry re-published the older one
        TopicRecord(0, 2, b"c-42", None, None),  # a tombstone
    ]
    assert latest_decisions(records) == {"c-42": newer}


def test_control_ids_cannot_contain_the_key_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        decision(client_id=f"c{KEY_SEPARATOR}x")


async def test_redis_down_publishes_first_and_a_retry_republishes_the_same_record() -> None:
    published: list[tuple[bytes, bytes]] = []

    async def publish(key: bytes, value: bytes) -> None:
        published.append((key, value))

    closed = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=no_retries())
    ticks = iter([T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=9)] * 3)
    responder = RateLimitResponder(publish, ControlsStore(closed), clock=lambda: next(ticks))
    ctx = make_ctx()
    for _ in range(2):
        with pytest.raises(ResponderError) as raised:
            await responder(THROTTLE, ctx)
        assert raised.value.retryable
        assert "Redis" in str(raised.value)
        assert "mlwarden controls sync" in str(raised.value)
    await closed.aclose()

    assert len(published) == 2
    assert published[0] == published[1], "a retry must not extend the expiry"
    sent = ControlDecision.model_validate_json(published[0][1])
    assert sent.decided_at == T0
    assert published[0][0] == b"c-42"


async def test_a_failing_publisher_stops_before_redis_and_is_retryable() -> None:
    async def publish(key: bytes, value: bytes) -> None:
        raise ConnectionError("broker unreachable")

    redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=no_retries())
    responder = RateLimitResponder(publish, ControlsStore(redis), clock=lambda: T0)
    with pytest.raises(ResponderError, match="controls topic") as raised:
        await responder(THROTTLE, make_ctx())
    await redis.aclose()
    assert raised.value.retryable
