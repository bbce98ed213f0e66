"""The worker's ring buffer of recent telemetry: per-key and total bounds, alert subjects."""

from __future__ import annotations

import sys
import threading

import pytest

from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.recent import (
    _KEY_OVERHEAD_BYTES,
    _SLOT_OVERHEAD_BYTES,
    RecentTelemetry,
)
from tests.unit.test_evidence_support import make_alert


def record(i: int, client: str = "c1", model: str = "m", version: str = "1") -> TelemetryRecord:
    return TelemetryRecord(
        event_id=f"{client}-{i}",
        timestamp=1_800_000_000 + i,
        model_id=model,
        model_version=version,
        client_id=client,
        features=[float(i), 0.5],
        prediction=i % 3,
    )


def test_each_key_keeps_its_latest_records_newest_last() -> None:
    recent = RecentTelemetry(per_key=3)
    recent.observe(record(i) for i in range(5))
    kept = recent.for_client("c1")
    assert [r["event_id"] for r in kept] == ["c1-2", "c1-3", "c1-4"]
    assert kept[-1] == {
        "event_id": "c1-4",
        "timestamp": 1_800_000_004.0,
        "model_id": "m",
        "model_version": "1",
        "client_id": "c1",
        "features": [4.0, 0.5],
        "prediction": 1,
    }
    assert [r["event_id"] for r in recent.for_client("c1", 2)] == ["c1-3", "c1-4"]
    assert recent.for_client("c1", 0) == []
    assert recent.for_client("nobody") == []


def test_alerts_get_their_clients_or_their_models_records() -> None:
    recent = RecentTelemetry()
    recent.observe(
        [record(0, "acct-1", "fraud-scorer", "3"), record(1, "acct-2", "fraud-scorer", "3")]
    )
    recent.observe([record(2, "acct-1", "fraud-scorer", "4")])
    client_alert = make_alert(client="acct-1")
    assert [r["event_id"] for r in recent.for_alert(client_alert, 10)] == ["acct-1-0", "acct-1-2"]
    model_alert = make_alert(client=None)
    assert [r["event_id"] for r in recent.for_alert(model_alert, 10)] == ["acct-1-0", "acct-2-1"]


def test_a_redelivered_event_appears_once() -> None:
    recent = RecentTelemetry()
    recent.observe([record(1), record(2), record(1)])
    assert [r["event_id"] for r in recent.for_client("c1")] == ["c1-2", "c1-1"]


def test_a_flood_of_client_ids_is_bounded_by_keys_and_bytes() -> None:
    recent = RecentTelemetry(per_key=5, max_keys=100, max_bytes=10**9)
    for start in range(0, 5000, 500):
        recent.observe(record(i, client=f"rotating-{i}") for i in range(start, start + 500))
    assert len(recent) == 100
    assert recent.for_client("rotating-0") == []
    assert recent.for_client("rotating-4999") != []
    budget = 200_000
    recent = RecentTelemetry(per_key=5, max_keys=10**6, max_bytes=budget)
    for start in range(0, 5000, 500):
        recent.observe(record(i, client=f"rotating-{i}") for i in range(start, start + 500))
    assert recent.bytes_held <= budget
    assert recent.evicted_keys > 0
    # The model key is refreshed by every record, so the busiest key survives the flood.
    assert len(recent.for_model("m", "1")) == 5


def test_the_byte_account_matches_what_is_held_after_wraps_and_evictions() -> None:
    recent = RecentTelemetry(per_key=2, max_keys=3)
    for i in range(40):
        recent.observe([record(i, client=f"c{i % 4}", model=f"m{i % 3}")] * (1 + i % 3))
    held = recent._buffers.values()
    assert len(recent) == 3
    assert recent.bytes_held == sum(
        _KEY_OVERHEAD_BYTES + sum(sys.getsizeof(p) + _SLOT_OVERHEAD_BYTES for p in b.records)
        for b in held
    )


def test_observing_and_reading_from_two_threads_is_safe() -> None:
    recent = RecentTelemetry(per_key=50, max_keys=20)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for start in range(0, 2000, 100):
                recent.observe(record(i, client=f"c{i % 30}") for i in range(start, start + 100))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    for _ in range(200):
        recent.for_client("c1")
    thread.join()
    assert not errors


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentTelemetry(per_key=0)
