"""The detector contract: every online detector is a pure function of the events it saw.

Detectors read time only from `record.timestamp`, never from the clock, so a replay of a
recorded stream (`mlwarden backtest`) gives the same alerts as production. Their state is
JSON-able (`state_dict`/`load_state_dict`) so a worker that moves a partition or restarts
resumes where it stood instead of relearning from scratch.
"""

from __future__ import annotations

import abc
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_ALERT_ID_NAMESPACE = uuid.UUID("5b0e6a38-2f0c-4c39-9c54-9f7c8d1f4e11")


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """Valid records of one partition, in the order they are to be seen (event-time order).

    A class rather than a bare list so that column views (feature matrices, probability
    arrays) can later be computed once per batch and shared by every detector.
    """

    records: Sequence[TelemetryRecord]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TelemetryRecord]:
        return iter(self.records)


class Detector(abc.ABC):
    """Watches one stream of telemetry and says when it stops looking like its baseline."""

    name: ClassVar[str]
    kind: ClassVar[AlertKind]
    config_model: ClassVar[type[BaseModel]]

    @abc.abstractmethod
    def update(self, batch: TelemetryBatch) -> list[Alert]:
        """Learn from `batch` and return the alerts it tripped (usually none)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: JSON-able, restored with `load_state_dict`."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this detector's state with one saved by `state_dict`."""


@runtime_checkable
class BaselineAware(Protocol):
    """A detector whose per-model-version baselines can be fitted offline and loaded at start.

    Opt-in: a detector joins by implementing these methods (`isinstance(d, BaselineAware)`);
    `baseline.fit_baselines` and `baseline.install_baseline_file` handle everything else. A
    baseline travels as the detector's own JSON-able encoding of the object it freezes online
    (the same encoding its `state_dict` uses), so a fitted baseline and a learned one cannot
    differ. Keys are (model_id, model_version).
    """

    name: ClassVar[str]

    def baseline_config(self) -> dict[str, Any]:
        """The config values a baseline depends on: a file fitted with others is refused."""
        ...

    def export_baselines(self) -> dict[tuple[str, str], Any]:
        """The frozen baselines held now (versions still learning are left out)."""
        ...

    def install_baselines(self, baselines: Mapping[tuple[str, str], Any]) -> None:
        """Validate `baselines` (ValueError naming the version and the problem), then use each
        one from its version's next event, unless that version already has a frozen baseline
        of its own (learned, installed earlier, or restored by `load_state_dict`)."""
        ...


def incident_fingerprint(detector: str, *identity: str) -> str:
    """Dedup key of an incident: a hash of what identifies it, never of when it was seen."""
    return hashlib.sha256("\x1f".join((detector, *identity)).encode()).hexdigest()[:32]


def new_alert(
    *,
    detector: str,
    kind: AlertKind,
    severity: Severity,
    fingerprint: str,
    record: TelemetryRecord,
    client_id: str | None,
    score: float,
    threshold: float,
    summary: str,
    evidence: dict[str, Any],
    labels: dict[str, str] | None = None,
) -> Alert:
    """An alert tripped by `record`.

    `alert_id` is derived from the fingerprint and the tripping event, so re-processing the same
    events yields the same id. `emitted_at` starts as the event time; the pipeline stamps the wall
    clock when the alert leaves it (detectors never read the clock).
    """
    detected_at = datetime.fromtimestamp(record.timestamp, tz=UTC)
    return Alert(
        alert_id=str(uuid.uuid5(_ALERT_ID_NAMESPACE, f"{fingerprint}/{record.event_id}")),
        fingerprint=fingerprint,
        kind=kind,
        detector=detector,
        severity=severity,
        model_id=record.model_id,
        model_version=record.model_version,
        client_id=client_id,
        detected_at=detected_at,
        emitted_at=detected_at,
        score=score,
        threshold=threshold,
        summary=summary,
        evidence=evidence,
        labels=labels or {},
    )
