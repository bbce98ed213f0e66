"""Detector pipelines per partition, with their state checkpointed to a changelog-backed table.

Telemetry is keyed by client_id, so a partition holds every event of its clients: one pipeline
per partition sees each client's whole stream. State is saved as one snapshot per partition
at most every `checkpoint_interval_s`, so a restarted worker or the new owner of a moved
partition resumes from the snapshot instead of relearning from scratch. Events between the last
snapshot and the crash are replayed from Kafka where their offsets were not yet committed.

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
from typing import Any, Final

from mlwarden.detectors.pipeline import DetectorPipeline
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

log = logging.getLogger(__name__)

CHUNK_CHARS: Final = 256 * 1024  # well under Kafka's default 1 MiB message limit
_SLOTS: Final = ("a", "b")


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

    def update(
        self, partition: int, records: Sequence[TelemetryRecord]
    ) -> tuple[list[Alert], dict[str, Any]]:
        """Run `records` of `partition` through its pipeline.

        Returns the alerts and, when a checkpoint is due, the snapshot table writes that make
        it. Nothing is written here: the worker runs this off its event loop (detection can
        take long enough to starve Kafka heartbeats) and applies the writes on the loop, which
        owns the table.
        """
        pipeline = self._pipelines.get(partition)
        if pipeline is None:
            pipeline = self._pipelines[partition] = self._restore(partition)
        alerts = pipeline.update(records)
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
        writes[str(partition)] = {"slot": slot, "chunks": len(chunks), "sha256": _digest(chunks)}
        self._slots[partition] = slot
        self._last_checkpoint[partition] = self._monotonic()
        return writes

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns; their new owner restores the snapshot."""
        for partition in partitions:
            self._pipelines.pop(partition, None)
            self._last_checkpoint.pop(partition, None)
            self._slots.pop(partition, None)

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
        return pipeline
