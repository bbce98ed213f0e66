"""The detector pipeline: one call per batch, the same code in worker, backtest and tests.

It knows nothing of Kafka. The stream worker keeps one pipeline per partition (per-client
state lives where that client's events land); backtest keeps one for the whole file.

A baseline file (`DetectorSuiteConfig.baseline_file`) is installed when a pipeline is built,
before any checkpoint is loaded: a detector takes a file's baseline for a version only while
that version has no frozen baseline, so whatever a restored checkpoint froze wins (see
`detectors/baseline.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.baseline import install_baseline_file, load_baseline_file
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord


class DetectorPipeline:
    """Runs every enabled detector over each batch and stamps alerts as they leave."""

    def __init__(self, detectors: Mapping[str, Detector], clock: Callable[[], datetime]) -> None:
        self.detectors = dict(detectors)
        self._clock = clock

    def update(self, records: Sequence[TelemetryRecord]) -> list[Alert]:
        """Feed one batch (event-time order) to every detector; return the alerts it tripped."""
        if not records:
            return []
        batch = TelemetryBatch(records)
        alerts = [alert for detector in self.detectors.values() for alert in detector.update(batch)]
        if not alerts:
            return alerts
        emitted_at = self._clock()
        return [alert.model_copy(update={"emitted_at": emitted_at}) for alert in alerts]

    def install_baseline_file(self, path: Path, registered: Collection[str]) -> list[str]:
        """Give the detectors the baselines fitted in `path` (ConfigError if it cannot be
        used); returns the names of the detectors that took them."""
        return install_baseline_file(self.detectors, load_baseline_file(path), path, registered)

    def state_dict(self) -> dict[str, Any]:
        return {name: detector.state_dict() for name, detector in self.detectors.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore saved detectors; a detector enabled since the save starts fresh."""
        for name, detector in self.detectors.items():
            if name in state:
                detector.load_state_dict(state[name])
