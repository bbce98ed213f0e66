"""The worker's consumer polls in bounded steps and rejoins its group after losing it.

Why (streams/app, streams/faust_transport): one poll used to return every prefetched record,
which Faust queues for the agent before it polls again, so with every detector on the gap
between polls passed `max_poll_interval`; aiokafka then left the group and refused to rejoin
until the next poll, which Faust never makes while its partitions are revoked.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest
from faust.types import TP

from mlwarden.streams.app import create_app
from mlwarden.streams.faust_transport import AssignmentWait
from mlwarden.streams.settings import KafkaSettings, Settings, WorkerSettings

AN_HOUR = 3600.0


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    settings = Settings(
        kafka=KafkaSettings(max_poll_interval_s=30),
        worker=WorkerSettings(data_dir=tmp_path, web_port=0, batch_size=123),
    )
    return create_app(settings)


@pytest.fixture
async def worker_consumer(app: faust.App) -> AsyncIterator[aiokafka.AIOKafkaConsumer]:
    """The aiokafka consumer Faust builds for the worker (not started: no broker needed)."""
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    thread._consumer = consumer
    try:
        yield consumer
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # the consumer thread's own loop, never started here


def without_polling_for(consumer: aiokafka.AIOKafkaConsumer, seconds: float) -> None:
    """Pretend the consumer's last poll ended `seconds` ago."""
    consumer._subscription._last_fetch_ended = time.monotonic() - seconds


async def test_a_poll_returns_at_most_one_batch(
    app: faust.App, worker_consumer: aiokafka.AIOKafkaConsumer
) -> None:
    # Faust's default (None) let one poll hand over every prefetched record: 30,000 in the
    # benchmark, 26 s of detection before Faust polled again.
    assert app.conf.broker_max_poll_records == 123
    assert worker_consumer._max_poll_records == 123
    assert worker_consumer._max_poll_interval_ms == 30_000


async def test_waiting_for_partitions_is_not_idle_and_the_clock_restarts_at_assignment(
    worker_consumer: aiokafka.AIOKafkaConsumer,
) -> None:
    subscription = worker_consumer._subscription
    without_polling_for(worker_consumer, AN_HOUR)
    assert subscription.fetcher_idle_time >= AN_HOUR  # aiokafka would refuse to rejoin

    wait = AssignmentWait()
    assert wait.begin(worker_consumer) >= AN_HOUR  # how long it had gone without a poll
    assert wait.waiting
    # However long the rejoin takes, aiokafka's idle check (ensure_active_group) sees a
    # consumer inside a poll, as it sees one blocked in getmany().
    without_polling_for(worker_consumer, AN_HOUR)
    assert subscription.fetcher_idle_time == 0
    assert wait.begin(worker_consumer) == 0  # idempotent: still one poll open

    wait.end()
    assert not wait.waiting
    assert subscription.fetcher_idle_time < 5  # counting again, from the assignment
    assert subscription._fetch_count == 0  # nothing left open for Faust's own polls
    wait.end()  # idempotent
    assert subscription._fetch_count == 0


async def test_the_worker_consumer_waits_from_revocation_to_a_non_empty_assignment(
    app: faust.App, worker_consumer: aiokafka.AIOKafkaConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = app.consumer._thread  # type: ignore[attr-defined]

    async def faust_rebalance_step(*args: Any) -> None:
        """Faust's own revocation / assignment, which needs the running app."""

    monkeypatch.setattr(app.consumer, "threadsafe_partitions_revoked", faust_rebalance_step)
    monkeypatch.setattr(app.consumer, "threadsafe_partitions_assigned", faust_rebalance_step)
    partitions = {TP("mlwarden.telemetry", 0), TP("mlwarden.telemetry", 1)}

    without_polling_for(worker_consumer, AN_HOUR)  # left the group: went over the interval
    await thread.on_partitions_revoked(partitions)
    assert thread.assignment_wait.waiting
    assert worker_consumer._subscription.fetcher_idle_time == 0  # so aiokafka rejoins

    await thread.on_partitions_assigned(set(), 1)  # nothing to poll: still waiting
    assert thread.assignment_wait.waiting
    await thread.on_partitions_assigned(partitions, 2)
    assert not thread.assignment_wait.waiting
