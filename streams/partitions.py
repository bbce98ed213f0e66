"""Detector pipelines per partition, with their state checkpointed to a changelog-backed table.

Telemetry is keyed by client_id, so a partition holds every event of its clients: one pipeline
per partition sees each client's whole stream. State is saved as one snapshot per partition
at most every `checkpoint_interval_s`, so a restarted worker or the new owner of a moved
partition resumes from the snapshot instead of relearning from scratch. Events between the last
snapshot and the crash are replayed from Kafka where their offsets were not yet committed.

Offsets are committed on their own clock, so a snapshot can also be *ahead* of the committed
offset: events it already holds come back after a restart or a rebalance. Fed twice, they
would look like a client repeating its own queries (Blacklight's near-duplicates) and page
someone. Each manifest therefore names the last offset its snapshot holds (`through_offset`),
and `fresh` drops what the restored pipeline has already seen.

A snapshot is JSON, zlib-compressed and split into chunks that each fit a Kafka message. It is
written to alternating slots, and a small manifest naming the slot is written last, so a worker
that dies mid-checkpoint leaves the previous snapshot whole. Table keys:
`"<partition>"` → manifest, `"<partition>/<slot>/<chunk>"` → chunk text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any, Final, Protocol, TypeVar

from mlwarden.detectors.pipeline import DetectorPipeline
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

log = logging.getLogger(__name__)

CHUNK_CHARS: Final = 256 * 1024  # well under Kafka's default 1 MiB message limit
_SLOTS: Final = ("a", "b")


class HasOffset(Protocol):
    @property
    def offset(self) -> int | None: ...


OffsetT = TypeVar("OffsetT", bound=HasOffset)


def partition_of_key(key: str) -> int:
    """The telemetry partition a snapshot table key belongs to (its changelog partition)."""
    return int(str(key).split("/", 1)[0])


def encode_snapshot(state: dict[str, Any]) -> list[str]:
    """State → compressed, base64 chunks of at most CHUNK_CHARS characters."""
    raw = json.dumps(state, separators=(",", ":"), allow_nan=False).encode()
    blob = base64.b64encode(zlib.compress(raw, 1)).decode("ascii")
    return [blob[start : start + CHUNK_CHARS] for start in range(0, len(blob), CHUNK_CHARS)]


def decode_snapshot(chunks: Sequence[str]) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode("".join(chunks))))
    return state


def _digest(chunks: Sequence[str]) -> str:
    return hashlib.sha256("".join(chunks).encode()).hexdigest()


class PartitionedPipelines:
    """One `DetectorPipeline` per partition, restored from and checkpointed to `snapshots`."""

    def __init__(
        self,
        new_pipeline: Callable[[], DetectorPipeline],
        snapshots: MutableMapping[str, Any],
        checkpoint_interval_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_pipeline = new_pipeline
        self._snapshots = snapshots
        self._checkpoint_interval_s = checkpoint_interval_s
        self._monotonic = monotonic
        self._pipelines: dict[int, DetectorPipeline] = {}
        self._last_checkpoint: dict[int, float] = {}
        self._slots: dict[int, str] = {}  # the slot each partition's manifest names
        self._through: dict[int, int] = {}  # the last offset each partition's pipeline holds

    def fresh(self, partition: int, messages: Sequence[OffsetT]) -> list[OffsetT]:
        """`messages` of `partition` that its (restored) pipeline has not seen yet."""
        self._pipeline(partition)
        through = self._through.get(partition)
        if through is None:
            return list(messages)
        return [
            message for message in messages if message.offset is None or message.offset > through
        ]

    def update(
        self,
        partition: int,
        records: Sequence[TelemetryRecord],
        through_offset: int | None = None,
    ) -> tuple[list[Alert], dict[str, Any]]:
        """Run `records` of `partition` through its pipeline; `through_offset` is the last
        offset of the batch they came from (dead letters and replays included).

        Returns the alerts and, when a checkpoint is due, the snapshot table writes that make
        it. Nothing is written here: the worker runs this off its event loop (detection can
        take long enough to starve Kafka heartbeats) and applies the writes on the loop, which
        owns the table.
        """
        alerts = self._pipeline(partition).update(records)
        if through_offset is not None:
            # Never backwards: a replayed batch (all of it skipped) ends below what the state
            # already holds, and the batches after it would pass as fresh.
            self._through[partition] = max(through_offset, self._through.get(partition, -1))
        now = self._monotonic()
        if alerts or now - self._last_checkpoint.get(partition, 0.0) >= self._checkpoint_interval_s:
            # An alert is always checkpointed at once: the incident it opened must survive a
            # restart, or the replayed events would open a second incident and page again.
            return alerts, self.checkpoint(partition)
        return alerts, {}

    def checkpoint(self, partition: int) -> dict[str, Any]:
        """The writes that store the partition's snapshot in the slot not in use, manifest last."""
        pipeline = self._pipelines.get(partition)
        if pipeline is None:
            return {}
        slot = _SLOTS[1] if self._slots.get(partition) == _SLOTS[0] else _SLOTS[0]
        chunks = encode_snapshot(pipeline.state_dict())
        writes: dict[str, Any] = {
            f"{partition}/{slot}/{index}": chunk for index, chunk in enumerate(chunks)
        }
        manifest: dict[str, Any] = {"slot": slot, "chunks": len(chunks), "sha256": _digest(chunks)}
        if partition in self._through:
            manifest["through_offset"] = self._through[partition]
        writes[str(partition)] = manifest
        self._slots[partition] = slot
        self._last_checkpoint[partition] = self._monotonic()
        return writes

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns; their new owner restores the snapshot."""
        for partition in partitions:
            self._pipelines.pop(partition, None)
            self._last_checkpoint.pop(partition, None)
            self._slots.pop(partition, None)
            self._through.pop(partition, None)

    def _pipeline(self, partition: int) -> DetectorPipeline:
        pipeline = self._pipelines.get(partition)
        if pipeline is None:
            pipeline = self._pipelines[partition] = self._restore(partition)
        return pipeline

    def _restore(self, partition: int) -> DetectorPipeline:
        pipeline = self._new_pipeline()
        manifest = self._snapshots.get(str(partition))
        if manifest is None:
            return pipeline
        self._slots[partition] = manifest["slot"]
        chunks = [
            self._snapshots.get(f"{partition}/{manifest['slot']}/{index}", "")
            for index in range(manifest["chunks"])
        ]
        if _digest(chunks) != manifest["sha256"]:
            # Only possible if the changelog lost records: relearning beats trusting garbage.
            log.error("detector snapshot of partition %d is incomplete; starting fresh", partition)
            return pipeline
        pipeline.load_state_dict(decode_snapshot(chunks))
        if isinstance(manifest.get("through_offset"), int):  # older manifests lack it
            self._through[partition] = manifest["through_offset"]
        return pipeline
