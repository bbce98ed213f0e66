"""Detector pipelines per partition, with their state checkpointed to a changelog-backed table.

Telemetry is keyed by client_id, so a partition holds every event of its clients: one pipeline
per partition sees each client's whole stream. State is saved as one snapshot per partition
at most every `checkpoint_interval_s`, so a restarted worker or the new owner of a moved
partition resumes from the snapshot instead of relearning from scratch. Events between the last
snapshot and the crash are replayed from Kafka where their offsets were not yet committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

from mlwarden.detectors.pipeline import DetectorPipeline
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord


class PartitionedPipelines:
    """One `DetectorPipeline` per partition, restored from and checkpointed to `snapshots`."""

    def __init__(
        self,
        new_pipeline: Callable[[], DetectorPipeline],
        snapshots: MutableMapping[int, Any],
        checkpoint_interval_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_pipeline = new_pipeline
        self._snapshots = snapshots
        self._checkpoint_interval_s = checkpoint_interval_s
        self._monotonic = monotonic
        self._pipelines: dict[int, DetectorPipeline] = {}
        self._last_checkpoint: dict[int, float] = {}

    def update(self, partition: int, records: Sequence[TelemetryRecord]) -> list[Alert]:
        """Run `records` of `partition` through its pipeline; checkpoint when one is due."""
        pipeline = self._pipelines.get(partition)
        if pipeline is None:
            pipeline = self._pipelines[partition] = self._restore(partition)
        alerts = pipeline.update(records)
        now = self._monotonic()
        if alerts or now - self._last_checkpoint.get(partition, 0.0) >= self._checkpoint_interval_s:
            # An alert is always checkpointed at once: the incident it opened must survive a
            # restart, or the replayed events would open a second incident and page again.
            self.checkpoint(partition)
        return alerts

    def checkpoint(self, partition: int) -> None:
        pipeline = self._pipelines.get(partition)
        if pipeline is not None:
            self._snapshots[partition] = pipeline.state_dict()
            self._last_checkpoint[partition] = self._monotonic()

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns; their new owner restores the snapshot."""
        for partition in partitions:
            self._pipelines.pop(partition, None)
            self._last_checkpoint.pop(partition, None)

    def _restore(self, partition: int) -> DetectorPipeline:
        pipeline = self._new_pipeline()
        snapshot = self._snapshots.get(partition)
        if snapshot is not None:
            pipeline.load_state_dict(snapshot)
        return pipeline
