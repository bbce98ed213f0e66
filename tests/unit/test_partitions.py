"""Per-partition pipelines: checkpoint cadence, chunked snapshots, crash-safe slots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mlwarden.detectors.registry import DetectorSuiteConfig, build_pipeline
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams import partitions
from mlwarden.streams.partitions import PartitionedPipelines, decode_snapshot, encode_snapshot

T0 = 1_790_000_000.0
SUITE = DetectorSuiteConfig.model_validate({"query_budget": {"rate_per_minute": 60, "burst": 5}})


def records(client: str, start: float, count: int) -> list[TelemetryRecord]:
    return [
        TelemetryRecord(
            event_id=f"{client}-{start}-{i}",
            timestamp=T0 + start + i * 0.01,
            model_id="m",
            model_version="1",
            client_id=client,
            prediction=0,
        )
        for i in range(count)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stored:
    """Pipelines whose checkpoint writes are applied to `store`, as the worker applies them."""

    def __init__(self, store: dict[str, Any], clock: Clock) -> None:
        self.store = store
        self.parts = PartitionedPipelines(
            lambda: build_pipeline(SUITE), store, checkpoint_interval_s=5.0, monotonic=clock
        )

    def update(self, partition: int, batch: list[TelemetryRecord]) -> list[Any]:
        alerts, writes = self.parts.update(partition, batch)
        self.store.update(writes)
        return alerts

    def checkpoint(self, partition: int) -> None:
        self.store.update(self.parts.checkpoint(partition))


def pipelines(store: dict[str, Any], clock: Clock) -> Stored:
    return Stored(store, clock)


def test_snapshot_codec_round_trips() -> None:
    state = {"query_budget": {"version": 1, "buckets": [["m", "c", 1.5]], "watermark": 3.0}}
    assert decode_snapshot(encode_snapshot(state)) == state


def test_checkpoints_follow_the_interval_and_every_alert() -> None:
    store: dict[str, Any] = {}
    clock = Clock()
    parts = pipelines(store, clock)
    parts.update(0, records("quiet", 0, 2))
    assert store["0"]["slot"] == "a"  # the first batch of a partition checkpoints
    clock.now += 1
    parts.update(0, records("quiet", 1, 2))
    assert store["0"]["slot"] == "a"  # not yet due
    assert len(parts.update(0, records("loud", 2, 10))) == 1
    assert store["0"]["slot"] == "b", "an alert is checkpointed at once"
    clock.now += 6
    parts.update(0, records("quiet", 3, 1))
    assert store["0"]["slot"] == "a"


def test_a_restored_partition_continues_the_incident() -> None:
    store: dict[str, Any] = {}
    first = pipelines(store, Clock())
    assert len(first.update(3, records("loud", 0, 10))) == 1
    restarted = pipelines(store, Clock())
    assert restarted.update(3, records("loud", 0.5, 10)) == [], "same incident, no new alert"
    fresh = pipelines({}, Clock())
    assert len(fresh.update(3, records("loud", 0.5, 10))) == 1


def test_large_snapshots_are_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "CHUNK_CHARS", 64)
    store: dict[str, Any] = {}
    parts = pipelines(store, Clock())
    for index in range(50):
        parts.update(1, records(f"c{index}", index * 0.001, 1))
    parts.checkpoint(1)
    manifest = store["1"]
    assert manifest["chunks"] > 3
    assert all(len(store[f"1/{manifest['slot']}/{i}"]) <= 64 for i in range(manifest["chunks"]))
    restored = pipelines(store, Clock())
    assert restored.parts._restore(1).state_dict() == parts.parts._pipelines[1].state_dict()


def test_a_crash_mid_checkpoint_leaves_the_previous_snapshot_whole() -> None:
    store: dict[str, Any] = {}
    parts = pipelines(store, Clock())
    parts.update(2, records("loud", 0, 10))
    assert store["2"]["slot"] == "a"
    store["2/b/0"] = "half-written"  # the next checkpoint died before its manifest
    restored = pipelines(store, Clock())
    assert restored.update(2, records("loud", 0.5, 10)) == [], "slot a restored intact"


def test_a_corrupted_snapshot_is_refused() -> None:
    store: dict[str, Any] = {}
    parts = pipelines(store, Clock())
    parts.update(2, records("loud", 0, 10))
    store["2/a/0"] = "garbage"
    fresh = pipelines(store, Clock())
    assert len(fresh.update(2, records("loud", 0.5, 10))) == 1  # started fresh, with a log line
    assert partitions.partition_of_key("2/b/7") == 2


def test_update_writes_nothing_itself() -> None:
    store: dict[str, Any] = {}
    parts = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    alerts, writes = parts.update(0, records("loud", 0, 10))
    assert len(alerts) == 1
    assert store == {}, "the worker applies checkpoint writes on its event loop"
    assert writes["0"]["chunks"] >= 1


@dataclass(frozen=True)
class Message:
    offset: int | None


def test_replayed_offsets_are_skipped_once_restored() -> None:
    """Offsets are committed on their own clock: events the snapshot already holds come back
    after a restart and must not be counted twice (Blacklight would see self-duplicates)."""
    store: dict[str, Any] = {}
    first = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    _, writes = first.update(0, records("quiet", 0, 3), through_offset=41)
    store.update(writes)
    assert store["0"]["through_offset"] == 41

    restarted = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    replay = [Message(offset) for offset in range(39, 45)]
    assert [m.offset for m in restarted.fresh(0, replay)] == [42, 43, 44]
    restarted.update(0, [], through_offset=44)
    assert restarted.fresh(0, [Message(44), Message(45)]) == [Message(45)]


def test_a_skipped_replay_does_not_move_the_offset_back() -> None:
    """After a restart the replay starts at the committed offset, below the snapshot's: the
    first replayed batch is skipped whole and must not make the next one look fresh."""
    store: dict[str, Any] = {}
    first = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    store.update(first.update(0, records("quiet", 0, 3), through_offset=350)[1])
    restarted = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    replayed = [Message(offset) for offset in range(100, 150)]
    assert restarted.fresh(0, replayed) == []
    restarted.update(0, [], through_offset=149)
    assert restarted.fresh(0, [Message(300), Message(351)]) == [Message(351)]
    assert restarted.checkpoint(0)["0"]["through_offset"] == 350


def test_a_partition_without_a_snapshot_or_offsets_skips_nothing() -> None:
    store: dict[str, Any] = {}
    parts = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    batch = [Message(5), Message(None)]
    assert parts.fresh(1, batch) == batch
    parts.update(1, records("quiet", 0, 1))  # through no offset: a file, or an old caller
    assert "through_offset" not in parts.checkpoint(1)["1"]
    assert parts.fresh(1, batch) == batch


def test_a_revoked_partition_forgets_its_offset() -> None:
    store: dict[str, Any] = {}
    parts = PartitionedPipelines(lambda: build_pipeline(SUITE), store, monotonic=Clock())
    parts.update(2, records("quiet", 0, 1), through_offset=9)
    parts.revoke([2])
    assert parts.fresh(2, [Message(3)]) == [Message(3)], "no snapshot was stored: start over"
