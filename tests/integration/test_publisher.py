"""The telemetry publisher against the real Tansu broker: round trip, keying, and outages.

Records are read back with kafka-python's KafkaConsumer on explicitly assigned partitions (no
consumer group, so no ~3 s group join). Restart tests run their own broker on a fixed port:
Tansu's memory storage forgets everything when it stops, so they publish only while it is down
and check only what was published then.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.broker import EmbeddedBroker, free_port
from mlwarden.streams.publisher import TelemetryPublisher

with warnings.catch_warnings():
    # kafka-python 3.0 imports its protocol schemas with helpers deprecated in Python 3.11.
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import NewTopic

# kafka-python 3.0.12 leaks the socket of every refused connection attempt (net/inet.py:
# sock_connect raises without closing it); `quiet_kafka` collects them while this filter holds.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]


def make_record(n: int, client_id: str = "c-1") -> TelemetryRecord:
    extra: dict[str, Any] = {}
    if n % 2:
        extra["features"] = {"amount": n * 1.5, "items": n % 7}
        extra["probabilities"] = {"fraud": 0.25, "ok": 0.75}
    else:
        extra["features"] = [float(n), -1.0, 0.5]
        extra["attributes"] = {"route": "/predict", "source_ip": "10.0.0.9", "retries": n % 3}
    return TelemetryRecord(
        event_id=f"e-{n:06d}",
        timestamp=1_790_000_000.0 + n / 1000,
        model_id="fraud-scorer",
        model_version="3",
        client_id=client_id,
        prediction=n % 2,
        latency_ms=4.5,
        **extra,
    )


@contextlib.contextmanager
def running_broker(port: int | None = None) -> Iterator[EmbeddedBroker]:
    """A broker of its own, killed 0.5 s after SIGTERM at exit (Tansu's SIGTERM waits for the
    clients still connected, so a plain stop takes its full 5 s grace while a producer lives)."""
    broker = EmbeddedBroker(port=port).start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=0.5)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def read_back(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """Every message of `topic`, polling until `expected` arrived (and a little longer)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} has no partitions"
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        for batch in consumer.poll(timeout_ms=300).values():  # duplicates would show up here
            messages.extend(batch)
        return messages
    finally:
        consumer.close()


def decoded(messages: list[Any]) -> list[TelemetryRecord]:
    return [TelemetryRecord.model_validate_json(m.value) for m in messages]


@pytest.fixture
def quiet_kafka(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Keeps kafka-python's per-reconnect ERROR tracebacks (and the sockets they hold) out of
    pytest's log capture, and collects the leaked sockets before the test ends."""
    caplog.set_level(logging.CRITICAL, logger="kafka")
    yield
    for _ in range(10):  # kafka-python's finalizers free its object graph over several passes
        if not gc.collect():
            break


def test_500_records_round_trip_keyed_by_client(broker: EmbeddedBroker) -> None:
    topic = f"telemetry-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, partitions=6)
    records = [make_record(n, client_id=f"client-{n % 25}") for n in range(500)]

    with TelemetryPublisher(broker.bootstrap, topic) as publisher:
        with ThreadPoolExecutor(max_workers=5) as pool:  # as a multi-threaded model server does
            accepted = list(pool.map(publisher.publish, records))
        assert all(accepted)
        assert publisher.flush(timeout_s=20)
        stats = publisher.stats
        assert (stats.sent, stats.acked, stats.failed, stats.dropped) == (500, 500, 0, 0)
        assert stats.buffered_bytes == 0

    messages = read_back(broker.bootstrap, topic, expected=500)
    assert len(messages) == 500
    originals = {r.event_id: r for r in records}
    partitions_of: defaultdict[str, set[int]] = defaultdict(set)
    for message, rec in zip(messages, decoded(messages), strict=True):
        assert rec == originals[rec.event_id]
        assert message.key == rec.client_id.encode()
        partitions_of[rec.client_id].add(message.partition)
    assert {m.key for m in messages} == {f"client-{n}".encode() for n in range(25)}
    assert {r.event_id for r in decoded(messages)} == set(originals)
    assert all(len(parts) == 1 for parts in partitions_of.values())
    assert len(set().union(*partitions_of.values())) > 1  # the keys did spread over partitions


@pytest.mark.usefixtures("quiet_kafka")
def test_records_published_before_the_broker_starts_arrive_once_it_does() -> None:
    port = free_port()
    topic = "telemetry-cold-start"
    records = [make_record(n, client_id=f"client-{n % 4}") for n in range(50)]

    with TelemetryPublisher(f"127.0.0.1:{port}", topic) as publisher:
        assert all(publisher.publish(r) for r in records)
        assert publisher.stats.pending == 50
        with running_broker(port) as broker:
            assert publisher.flush(timeout_s=20)
            assert (publisher.stats.acked, publisher.stats.failed) == (50, 0)
            messages = read_back(broker.bootstrap, topic, expected=50)

    assert sorted(decoded(messages), key=lambda r: r.event_id) == records


@pytest.mark.usefixtures("quiet_kafka")
def test_records_published_while_the_broker_is_down_arrive_when_it_returns() -> None:
    port = free_port()
    topic = "telemetry-outage"
    no_auto_create = {"allow_auto_create_topics": False}  # the test creates it, 4 partitions
    with running_broker(port) as first:
        create_topic(first.bootstrap, topic, partitions=4)
        publisher = TelemetryPublisher(first.bootstrap, topic, producer_config=no_auto_create)
        assert publisher.publish(make_record(0))
        assert publisher.flush(timeout_s=10)  # connected, partitions known

    with publisher:
        during_outage = [make_record(n, client_id=f"client-{n % 9}") for n in range(1, 101)]
        assert all(publisher.publish(r) for r in during_outage)
        assert publisher.flush(timeout_s=0.5) is False  # nowhere to go: they wait
        assert publisher.stats.pending == 100

        with running_broker(port) as second:  # same address, empty memory storage
            create_topic(second.bootstrap, topic, partitions=4)
            assert publisher.flush(timeout_s=30)
            stats = publisher.stats
            assert (stats.acked, stats.failed, stats.dropped) == (101, 0, 0)
            messages = read_back(second.bootstrap, topic, expected=100)

    assert sorted(decoded(messages), key=lambda r: r.event_id) == during_outage


@pytest.mark.usefixtures("quiet_kafka")
def test_close_during_an_outage_gives_up_on_time_and_counts_the_loss() -> None:
    topic = "telemetry-close-in-outage"
    with running_broker() as broker:
        publisher = TelemetryPublisher(broker.bootstrap, topic)
        assert publisher.publish(make_record(0))
        assert publisher.flush(timeout_s=10)

    for n in range(1, 21):
        assert publisher.publish(make_record(n))
    started = time.monotonic()
    publisher.close(timeout_s=0.5)

    assert time.monotonic() - started < 3.0
    stats = publisher.stats
    assert (stats.sent, stats.acked, stats.failed, stats.pending) == (21, 1, 20, 0)
    assert stats.buffered_bytes == 0
