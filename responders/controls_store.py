"""Where gateways find control decisions: one Redis key per client and model scope.

Layout (prefix configurable, default `mlwarden:controls:`)::

    {prefix}{client_id}                  decision JSON for all of the client's models
    {prefix}{client_id}\\x1f{model_id}    decision JSON for one model (`ControlDecision.key`)

Each key expires (`PXAT`) at its decision's own `expires_at`, so decisions lapse by themselves
even when no mlwarden process is running. A lift deletes the key.

The compacted topic `mlwarden.controls` is the record of truth and Redis is the fast copy that
gateways read, so every write here is conditional: a decision older (`decided_at`) than the one
stored is not written, and `sync_from_topic` (Redis was down, flushed or is new) can replay the
whole topic without rolling back a newer decision. Not guarded: a lift deletes the key, so a
late write of a decision made *before* that lift would bring it back; only a retry racing a
human lift can do that, and `sync_from_topic` puts it right.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import WatchError

from mlwarden.schemas.control import ControlAction, ControlDecision, control_key
from mlwarden.schemas.errors import ResponderError

_LOG: Final = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX: Final = "mlwarden:controls:"
_WATCH_ATTEMPTS: Final = 8
_MGET_CHUNK: Final = 500


class ApplyOutcome(StrEnum):
    """What `ControlsStore.apply` did with one decision."""

    WRITTEN = "written"
    DELETED = "deleted"
    """A lift (or an expired decision) removed the key, or found it already gone."""
    STALE = "stale"
    """Redis holds a newer decision for that key; left as it is."""


def no_retries() -> Retry:
    """For every Redis client mlwarden builds: redis-py ≥6 retries a failed command 3 times
    with up to 10 s backoff by itself (~10 s per refused connection), which would hide an
    outage behind the playbook engine's one retry policy and stall gateways that fail open."""
    return Retry(NoBackoff(), 0)


def decode_decision(raw: bytes | str | None, *, where: str) -> ControlDecision | None:
    """A stored decision, or None when absent or unreadable (logged: someone wrote junk)."""
    if raw is None:
        return None
    try:
        return ControlDecision.model_validate_json(raw)
    except ValidationError as exc:
        _LOG.warning("ignoring an unreadable control decision at %s: %s", where, exc)
        return None


def redis_location(redis: Redis[Any]) -> str:
    """`host:port/db` of a client, for messages: never the URL, which may hold a password."""
    kwargs: dict[str, Any] = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _escape_glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class ControlsStore:
    """Reads and conditionally writes decisions in Redis (layout in the module docstring).

    Redis errors (`redis.exceptions.RedisError`, `OSError`) propagate: the responder turns them
    into a retryable `ResponderError`, the CLI into a message.
    """

    def __init__(self, redis: Redis[Any], key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self._redis = redis
        self._prefix = key_prefix

    @property
    def location(self) -> str:
        """Where the decisions live (`host:port/db`), for results and messages."""
        return redis_location(self._redis)

    async def aclose(self) -> None:
        """Close the Redis client (the store owns it when built from settings)."""
        await cast(Any, self._redis).aclose()  # redis ≥5; types-redis lags behind

    def redis_key(self, client_id: str, model_id: str | None = None) -> str:
        return self._prefix + control_key(client_id, model_id)

    async def get(self, client_id: str, model_id: str | None = None) -> ControlDecision | None:
        """The live decision for exactly this client and scope (model-scoped or all models)."""
        key = self.redis_key(client_id, model_id)
        return decode_decision(await self._redis.get(key), where=key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, ControlDecision | None]:
        """Decisions by `ControlDecision.key`, read in one round trip per 500 keys."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ControlDecision | None] = {}
        for start in range(0, len(wanted), _MGET_CHUNK):
            chunk = wanted[start : start + _MGET_CHUNK]
            values = await self._redis.mget([self._prefix + key for key in chunk])
            for key, raw in zip(chunk, values, strict=True):
                found[key] = decode_decision(raw, where=self._prefix + key)
        return found

    async def list(self, client_id: str | None = None) -> list[ControlDecision]:
        """Every live decision (or one client's: all models and each model-scoped one)."""
        if client_id is None:
            patterns = [_escape_glob(self._prefix) + "*"]
        else:
            base = _escape_glob(self._prefix + client_id)
            patterns = [base, base + "\x1f*"]
        keys: list[str] = []
        for pattern in patterns:
            async for raw_key in self._redis.scan_iter(match=pattern, count=1000):
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                keys.append(key.removeprefix(self._prefix))
        decisions = [d for d in (await self.get_many(keys)).values() if d is not None]
        return sorted(decisions, key=lambda d: (d.client_id, d.model_id or ""))

    async def apply(self, decision: ControlDecision, *, now: datetime) -> ApplyOutcome:
        """Make Redis reflect `decision` unless it holds a newer one for the same key.

        Throttle/block: stored with the decision's expiry. Lift, or a decision already expired
        at `now`: the key is deleted. Optimistic (WATCH/MULTI), retried on a concurrent write.
        """
        key = self._prefix + decision.key
        remove = decision.action is ControlAction.LIFT or (
            decision.expires_at is not None and decision.expires_at <= now
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            for attempt in range(_WATCH_ATTEMPTS):
                try:
                    await pipe.watch(key)
                    current = decode_decision(await pipe.get(key), where=key)
                    if current is not None and current.decided_at > decision.decided_at:
                        await pipe.unwatch()
                        return ApplyOutcome.STALE
                    pipe.multi()
                    if remove:
                        pipe.delete(key)
                    else:
                        assert decision.expires_at is not None  # the model enforces it
                        expires_ms = int(decision.expires_at.timestamp() * 1000)
                        pipe.set(key, decision.model_dump_json(), pxat=expires_ms)
                    await pipe.execute()
                    return ApplyOutcome.DELETED if remove else ApplyOutcome.WRITTEN
                except WatchError:
                    if attempt == _WATCH_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable: the last WatchError is raised")


@dataclass(frozen=True)
class TopicRecord:
    """One record of the controls topic, decoded (None when its value is not a decision)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    decision: ControlDecision | None


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> list[TopicRecord]:
    """Every record on `topic` now, from the beginning of each partition, in offset order.

    Reads with no consumer group (nothing committed, no group join) up to the end offsets taken
    at the start, so it returns as soon as it has caught up instead of waiting for a timeout.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
    )
    deadline = time.monotonic() + timeout_s
    records: list[TopicRecord] = []
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, deadline)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            if time.monotonic() > deadline:
                raise ResponderError(
                    f"reading {topic} from {bootstrap} did not catch up within {timeout_s:g}s; "
                    "check the broker, or pass a longer timeout",
                    retryable=True,
                )
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    decision = _decode_record(message.value, f"{topic}[{tp.partition}]")
                    records.append(
                        TopicRecord(
                            tp.partition, message.offset, message.key, message.value, decision
                        )
                    )
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return records


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, deadline: float
) -> list[TopicPartition]:
    while True:
        await consumer.topics()  # refreshes cluster metadata
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() > deadline:
            raise ResponderError(
                f"topic {topic} does not exist; create it (`mlwarden worker` does at start) "
                "or check MLWARDEN_KAFKA__TOPICS__CONTROLS",
                retryable=False,
            )
        await asyncio.sleep(0.2)


def _decode_record(value: bytes | None, where: str) -> ControlDecision | None:
    if value is None:  # a tombstone: compaction's delete marker
        return None
    return decode_decision(value, where=where)


@dataclass
class SyncReport:
    """What `sync_from_topic` did, by outcome."""

    records: int = 0
    unreadable: int = 0
    outcomes: dict[ApplyOutcome, int] = field(default_factory=dict)

    def count(self, outcome: ApplyOutcome) -> int:
        return self.outcomes.get(outcome, 0)


def latest_decisions(records: Iterable[TopicRecord]) -> dict[str, ControlDecision]:
    """The newest decision per key (by `decided_at`; the later record wins a tie).

    By `decided_at` rather than offset: a retry may re-publish a decision after a newer one
    (or after a partition count change put one key in two partitions).
    """
    latest: dict[str, ControlDecision] = {}
    for record in records:
        decision = record.decision
        if decision is None:
            continue
        held = latest.get(decision.key)
        if held is None or decision.decided_at >= held.decided_at:
            latest[decision.key] = decision
    return latest


async def sync_from_topic(
    bootstrap: str, topic: str, store: ControlsStore, *, now: datetime, timeout_s: float = 30.0
) -> SyncReport:
    """Replay the compacted controls topic into Redis: the newest decision per key wins.

    For Redis that was down while decisions were made, was flushed, or is new. Live decisions
    are written with their own expiry; lifts and expired ones delete the key; a newer decision
    already in Redis is kept. Safe to run at any time and as often as wanted.
    """
    records = await read_topic(bootstrap, topic, timeout_s=timeout_s)
    report = SyncReport(records=len(records))
    report.unreadable = sum(1 for r in records if r.decision is None and r.value is not None)
    for decision in latest_decisions(records).values():
        outcome = await store.apply(decision, now=now)
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    return report
