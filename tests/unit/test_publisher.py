"""The telemetry publisher without a broker: encoding, the byte bound, drops, and shutdown.

Every publisher here points at a loopback port nobody listens on, which is exactly the state a
model server is in when it starts before Kafka or Kafka goes away.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.broker import free_port
from mlwarden.streams.publisher import TelemetryPublisher, encode_record

Factory = Callable[..., TelemetryPublisher]

# kafka-python 3.0.12 leaks the socket of every refused connection attempt (net/inet.py:
# sock_connect raises without closing it). `make_publisher` keeps kafka-python's ERROR records,
# whose tracebacks hold those sockets, out of pytest's log capture and collects the sockets
# while this filter holds, so no ResourceWarning escapes into another test.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")


def record(n: int = 0, client_id: str = "c-1", **extra: Any) -> TelemetryRecord:
    """Records of equal encoded size for equal-width `n`."""
    fields: dict[str, Any] = {
        "event_id": f"e-{n:06d}",
        "timestamp": 1_790_000_000.25,
        "model_id": "fraud-scorer",
        "model_version": "3",
        "client_id": client_id,
        "prediction": 1,
    }
    return TelemetryRecord(**(fields | extra))


def size_of(rec: TelemetryRecord) -> int:
    key, value = encode_record(rec)
    return len(key) + len(value)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def unreachable() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def make_publisher(unreachable: str, caplog: pytest.LogCaptureFixture) -> Iterator[Factory]:
    caplog.set_level(logging.CRITICAL, logger="kafka")
    made: list[TelemetryPublisher] = []

    def make(**kwargs: Any) -> TelemetryPublisher:
        publisher = TelemetryPublisher(unreachable, **kwargs)
        made.append(publisher)
        return publisher

    yield make
    while made:  # no loop variable left holding a publisher
        made.pop().close(timeout_s=0)
    for _ in range(10):  # kafka-python's finalizers free its object graph over several passes
        if not gc.collect():
            break


def test_encoding_keys_by_client_id_and_leaves_out_nulls() -> None:
    rec = record(
        client_id="клиент-7",
        features={"amount": 12.5},
        probabilities=[0.1, 0.9],
        attributes={"route": "/predict", "retries": 0},
    )
    key, value = encode_record(rec)
    assert key == "клиент-7".encode()
    as_json = json.loads(value)
    assert "input_hash" not in as_json
    assert "latency_ms" not in as_json
    assert None not in as_json.values()
    assert TelemetryRecord.model_validate_json(value) == rec


def test_constructor_does_not_wait_for_a_down_broker(make_publisher: Factory) -> None:
    started = time.monotonic()
    with make_publisher() as publisher:
        assert time.monotonic() - started < 1.0
        assert (publisher.stats.sent, publisher.stats.dropped) == (0, 0)


def test_publish_buffers_while_down_then_drops_when_full(
    make_publisher: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    size = size_of(record(0))
    publisher = make_publisher(buffer_bytes=3 * size)
    caplog.set_level(logging.WARNING, logger="mlwarden.streams.publisher")

    started = time.monotonic()
    results = [publisher.publish(record(n)) for n in range(5)]

    assert time.monotonic() - started < 0.5  # nothing waited for the network
    assert results == [True, True, True, False, False]
    stats = publisher.stats
    assert (stats.sent, stats.dropped, stats.acked, stats.failed) == (3, 2, 0, 0)
    assert stats.pending == 3
    assert stats.buffered_bytes == 3 * size
    drop_warnings = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(drop_warnings) == 1  # rate-limited: one line for both drops


def test_concurrent_publishers_share_one_byte_bound(make_publisher: Factory) -> None:
    size = size_of(record(0))
    publisher = make_publisher(buffer_bytes=100 * size)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def publish_many(thread: int) -> None:
        mine = [publisher.publish(record(thread * 1000 + n)) for n in range(50)]
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=publish_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes.count(True) == 100
    stats = publisher.stats
    assert (stats.sent, stats.dropped) == (100, 300)
    assert stats.buffered_bytes == 100 * size


def test_publish_inference_fills_in_event_id_and_timestamp(
    make_publisher: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = make_publisher()
    seen: list[TelemetryRecord] = []

    def capture(rec: TelemetryRecord) -> bool:
        seen.append(rec)
        return True

    monkeypatch.setattr(publisher, "publish", capture)

    before = time.time()
    assert publisher.publish_inference(
        model_id="m",
        model_version="1",
        client_id="c",
        prediction="cat",
        features=(1, 2.5),
        probabilities={"cat": 0.75, "dog": 0.25},
    )
    after = time.time()

    (rec,) = seen
    assert uuid.UUID(rec.event_id).version == 4
    assert before <= rec.timestamp <= after
    assert rec.features == [1.0, 2.5]
    assert rec.prediction == "cat"


def test_publish_inference_raises_on_a_broken_contract(make_publisher: Factory) -> None:
    publisher = make_publisher()
    with pytest.raises(ValidationError, match="probability"):
        publisher.publish_inference(
            model_id="m", model_version="1", client_id="c", prediction=1, probabilities=[1.5]
        )
    with pytest.raises(ValidationError, match="client_id"):
        publisher.publish_inference(model_id="m", model_version="1", client_id="", prediction=1)
    assert publisher.stats.sent == publisher.stats.dropped == 0


def test_records_that_wait_past_the_delivery_timeout_fail_and_free_the_buffer(
    make_publisher: Factory,
) -> None:
    size = size_of(record(0))
    publisher = make_publisher(
        buffer_bytes=2 * size,
        linger_ms=0,
        delivery_timeout_ms=300,
        producer_config={"request_timeout_ms": 200},
    )
    assert publisher.publish(record(0))
    assert publisher.publish(record(1))
    assert not publisher.publish(record(2))

    assert wait_for(lambda: publisher.stats.failed == 2)
    assert publisher.stats.buffered_bytes == 0
    assert publisher.publish(record(3))  # room again


def test_flush_gives_up_at_its_timeout_while_down(make_publisher: Factory) -> None:
    publisher = make_publisher()
    assert publisher.publish(record(0))
    started = time.monotonic()
    assert publisher.flush(timeout_s=0.3) is False
    assert 0.25 < time.monotonic() - started < 1.0
    assert publisher.stats.pending == 1  # still buffered, still deliverable


def test_close_fails_what_it_cannot_deliver_and_refuses_new_records(
    make_publisher: Factory,
) -> None:
    publisher = make_publisher()
    assert publisher.publish(record(0))
    assert publisher.publish(record(1))

    started = time.monotonic()
    publisher.close(timeout_s=0.2)
    assert time.monotonic() - started < 1.5

    stats = publisher.stats
    assert (stats.sent, stats.failed, stats.pending, stats.buffered_bytes) == (2, 2, 0, 0)
    assert publisher.publish(record(2)) is False
    assert publisher.stats.dropped == 1
    publisher.close(timeout_s=0.2)  # idempotent


@pytest.mark.parametrize(
    "kwargs",
    [
        {"producer_config": {"max_block_ms": 60_000}},
        {"producer_config": {"value_serializer": str.encode}},
        {"topic": "no spaces allowed"},
        {"buffer_bytes": 0},
    ],
)
def test_settings_that_would_break_the_contract_are_refused(
    unreachable: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError):
        TelemetryPublisher(unreachable, **kwargs)
