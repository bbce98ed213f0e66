"""What the per-model drift detectors share: config, per-version state, incidents, rollouts.

Each (model_id, model_version) learns its own baseline from its first `baseline_size` events,
then is compared with it on a sliding window of the latest `window_size` events, evaluated
every `evaluate_every` events. Evaluations happen at fixed event *counts* of the version, so
any split of the stream into batches evaluates at the same events and raises the same alerts.

The window is kept as `window_size / evaluate_every` blocks of per-block sums: at every
evaluation the window is exactly the latest `window_size` events, yet memory and state are
a handful of numbers per block instead of one entry per event.

A version idle (in event time) for `idle_seconds` is forgotten and relearns if it returns.
The check is made lazily when a version's next event arrives and by a sweep after each batch,
both against the same watermark (the largest timestamp seen), so the outcome does not depend
on where batches end. Each model also keeps the baselines of its last two frozen versions,
for comparing a rollout with its predecessor; they expire with the model's last event.

`baseline.Baselines` is not used: it keeps every baseline observation (state grows with
`baseline_size`) and cannot forget a version; these detectors need only counts and moments.

Baselines fitted offline (`mlwarden baseline fit`, `baseline.BaselineFile`) are installed with
`install_baselines` and taken up lazily: at the first event of a listed version that this
detector looks at, if the version has no frozen baseline yet (new, still learning, or
forgotten after `idle_seconds`), the file's baseline is frozen for it by the same code that
freezes a learned one, rollout check included, and that event is already tested. A version
with a frozen baseline (learned, installed, or restored by `load_state_dict`) keeps it, so a
restart resumes exactly where the checkpoint stood whatever the file says.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint
from mlwarden.detectors.baseline import ModelKey, decode_each
from mlwarden.detectors.drift_stats import per_test_alpha
from mlwarden.detectors.rollout_checks import Regression, rollout_alert
from mlwarden.schemas.alert import Alert, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

SAMPLE_IDS = 5
"""Event ids kept per version as evidence (the latest ones)."""

_HISTORY_DEPTH = 2  # last frozen versions per model: the newest and the one before it


class WindowedDriftConfig(BaseModel):
    """What every baseline-vs-window detector is tuned by. Defaults suit ~20 events/s/model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_size: int = Field(
        default=3000, ge=50, description="Events a version learns its baseline from."
    )
    window_size: int = Field(default=1000, ge=10, description="Latest events tested.")
    evaluate_every: int = Field(default=100, ge=1, description="Events between tests.")
    expected_run_length_events: float = Field(
        default=1e7,
        gt=0,
        description="Benign events per model version between false alarms (1e7 ~ 6 days at 20/s).",
    )
    close_after: int = Field(
        default=12, ge=1, description="Consecutive clean evaluations that close an incident."
    )
    idle_seconds: float = Field(
        default=3600.0, gt=0, description="Event-time silence after which a version is forgotten."
    )
    severity: Severity = Severity.WARNING
    rollout_check: bool = Field(
        default=True, description="Compare a new version's baseline with its predecessor's."
    )
    rollout_severity: Severity = Severity.CRITICAL

    @model_validator(mode="after")
    def _window_is_whole_blocks(self) -> Self:
        if self.window_size % self.evaluate_every:
            raise ValueError(
                f"window_size ({self.window_size}) must be a multiple of evaluate_every "
                f"({self.evaluate_every}): the window is kept as whole evaluation blocks"
            )
        if self.expected_run_length_events < self.evaluate_every:
            raise ValueError("expected_run_length_events must be at least evaluate_every")
        return self

    @property
    def blocks(self) -> int:
        return self.window_size // self.evaluate_every

    def alpha(self, sources: int = 1) -> float:
        """Per-test level of each of `sources` tests evaluated every `evaluate_every` events."""
        return per_test_alpha(self.evaluate_every, self.expected_run_length_events, sources)


@dataclass(slots=True)
class Incident:
    """An open incident: alerted once, closed after `close_after` clean evaluations in a row."""

    fingerprint: str
    opened_at: float
    clean: int = 0

    def encode(self) -> list[Any]:
        return [self.fingerprint, self.opened_at, self.clean]

    @classmethod
    def decode(cls, raw: list[Any] | None) -> Incident | None:
        return None if raw is None else cls(str(raw[0]), float(raw[1]), int(raw[2]))


def still_open(incident: Incident | None, alarming: bool, close_after: int) -> Incident | None:
    """The incident after one evaluation: alarms keep it open, a run of clean ones closes it."""
    if incident is None:
        return None
    if alarming:
        incident.clean = 0
        return incident
    incident.clean += 1
    return None if incident.clean >= close_after else incident


class _VersionState(Protocol):
    last_ts: float
    recent_ids: deque[str]
    incident: Incident | None


S = TypeVar("S", bound=_VersionState)
B = TypeVar("B")


class VersionTable(Generic[S]):
    """Live per-version states, forgotten after `idle_seconds` of event-time silence."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.states: dict[ModelKey, S] = {}
        self.watermark = float("-inf")

    def advance(self, timestamp: float) -> None:
        self.watermark = max(self.watermark, timestamp)

    def get(self, key: ModelKey) -> S | None:
        """The live state of `key` (None if unknown or idle too long); call `advance` first."""
        state = self.states.get(key)
        if state is not None and state.last_ts <= self.watermark - self.idle_seconds:
            del self.states[key]
            return None
        return state

    def sweep(self) -> None:
        cutoff = self.watermark - self.idle_seconds
        for key in [k for k, s in self.states.items() if s.last_ts <= cutoff]:
            del self.states[key]


@dataclass(slots=True)
class _ModelHistory(Generic[B]):
    last_ts: float
    frozen: list[tuple[str, B]]  # (version, baseline), oldest first


class RolloutHistory(Generic[B]):
    """Per model, the baselines of its most recently frozen versions (for rollout checks)."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._models: dict[str, _ModelHistory[B]] = {}

    def seen(self, model_id: str, timestamp: float, watermark: float) -> None:
        """Note an event of `model_id` (any version); expire its history if it was silent."""
        history = self._models.get(model_id)
        if history is None:
            return
        if history.last_ts <= watermark - self.idle_seconds:
            del self._models[model_id]
        else:
            history.last_ts = max(history.last_ts, timestamp)

    def freeze(
        self, model_id: str, version: str, baseline: B, timestamp: float
    ) -> tuple[str, B] | None:
        """Record a newly frozen baseline; return the most recent *other* version's, if any."""
        history = self._models.setdefault(model_id, _ModelHistory(timestamp, []))
        history.last_ts = max(history.last_ts, timestamp)
        others = [entry for entry in history.frozen if entry[0] != version]
        previous = others[-1] if others else None
        history.frozen = [*others, (version, baseline)][-_HISTORY_DEPTH:]
        return previous

    def sweep(self, watermark: float) -> None:
        cutoff = watermark - self.idle_seconds
        for model_id in [m for m, h in self._models.items() if h.last_ts <= cutoff]:
            del self._models[model_id]

    def state_dict(self, encode: Callable[[B], Any]) -> list[Any]:
        return [
            [model_id, h.last_ts, [[version, encode(b)] for version, b in h.frozen]]
            for model_id, h in self._models.items()
        ]

    def load_state_dict(self, rows: list[Any], decode: Callable[[Any], B]) -> None:
        self._models = {
            str(model_id): _ModelHistory(float(last_ts), [(str(v), decode(b)) for v, b in frozen])
            for model_id, last_ts, frozen in rows
        }


class VersionedDriftDetector(Detector, Generic[S, B]):
    """What both drift detectors share: the event loop, version expiry, rollout history, state,
    and installing baselines fitted offline.

    A subclass says how one version's state is created, fed and (de)serialised; `S` is that
    state, `B` the frozen baseline kept for rollout comparisons and written to baseline files.
    """

    state_version: ClassVar[int] = 1

    def __init__(self, config: WindowedDriftConfig) -> None:
        self._drift_config = config
        self._versions: VersionTable[S] = VersionTable(config.idle_seconds)
        self._history: RolloutHistory[B] = RolloutHistory(config.idle_seconds)
        self._installed: dict[ModelKey, B] = {}
        self._settled: dict[ModelKey, S] = {}  # listed versions' states known to be frozen

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        versions, installed = self._versions, self._installed
        for record in batch:
            versions.advance(record.timestamp)
            self._history.seen(record.model_id, record.timestamp, versions.watermark)
            if installed and (record.model_id, record.model_version) in installed:
                rollout = self._take_up_installed(record)
                if rollout is not None:
                    alerts.append(rollout)
            alert = self._observe(record)
            if alert is not None:
                alerts.append(alert)
        versions.sweep()
        self._history.sweep(versions.watermark)
        return alerts

    def _state_of(self, record: TelemetryRecord) -> S:
        """The live state of the record's version (new if unknown or expired), touched."""
        key = (record.model_id, record.model_version)
        state = self._versions.get(key)
        if state is None:
            state = self._versions.states[key] = self._new_state(record.timestamp)
        state.last_ts = max(state.last_ts, record.timestamp)
        return state

    def _frozen(self, record: TelemetryRecord, state: S, baseline: B) -> Alert | None:
        """`record` froze the version's baseline: keep it for rollouts, check it against the
        previous version's (learned and installed baselines alike)."""
        config = self._drift_config
        previous = self._history.freeze(
            record.model_id, record.model_version, baseline, record.timestamp
        )
        if previous is None or not config.rollout_check:
            return None
        previous_version, previous_baseline = previous
        regression = self._rollout_regression(previous_baseline, baseline)
        if regression is None:
            return None
        return rollout_alert(
            detector=self.name,
            severity=config.rollout_severity,
            record=record,
            previous_version=previous_version,
            regression=regression,
            sample_event_ids=list(state.recent_ids) or [record.event_id],
        )

    def _opened_incident(self, record: TelemetryRecord, state: S, alarming: bool) -> str | None:
        """One evaluation's outcome for the version's incident: alarms keep an open one open,
        clean runs close it; the fingerprint of a new one when `record` opens it."""
        if state.incident is not None:
            state.incident = still_open(state.incident, alarming, self._drift_config.close_after)
            return None
        if not alarming:
            return None
        fingerprint = incident_fingerprint(
            self.name, record.model_id, record.model_version, record.event_id
        )
        state.incident = Incident(fingerprint, record.timestamp)
        return fingerprint

    def _take_up_installed(self, record: TelemetryRecord) -> Alert | None:
        """Freeze the installed baseline for the record's version unless it has one already."""
        key = (record.model_id, record.model_version)
        state = self._versions.get(key)
        if state is not None and state is self._settled.get(key):
            return None  # the usual case, checked first: frozen since we last looked
        if not self._looks_at(record):
            return None
        if state is not None and self._baseline_of(state) is not None:
            self._settled[key] = state
            return None
        # New, or still learning: what it learned so far is dropped for the fitted baseline.
        state = self._versions.states[key] = self._new_state(record.timestamp)
        self._settled[key] = state
        baseline = self._installed[key]
        self._adopt(state, baseline)
        return self._frozen(record, state, baseline)

    def baseline_config(self) -> dict[str, Any]:
        return {"baseline_size": self._drift_config.baseline_size}

    def export_baselines(self) -> dict[ModelKey, Any]:
        exported = {}
        for key, state in self._versions.states.items():
            baseline = self._baseline_of(state)
            if baseline is not None:
                exported[key] = self._encode_baseline(self._for_export(baseline))
        return exported

    def install_baselines(self, baselines: Mapping[ModelKey, Any]) -> None:
        self._installed = decode_each(baselines, self._check_baseline)
        self._settled.clear()

    def _looks_at(self, record: TelemetryRecord) -> bool:
        """Whether this detector uses `record` at all (e.g. it has probabilities)."""
        return True

    def _for_export(self, baseline: B) -> B:
        """The baseline as written to a file (e.g. client ids replaced by ordinals)."""
        return baseline

    @abc.abstractmethod
    def _baseline_of(self, state: S) -> B | None:
        """The version's frozen baseline, or None while it learns."""

    @abc.abstractmethod
    def _adopt(self, state: S, baseline: B) -> None:
        """Make a fresh `state` frozen on `baseline`, as if it had learned it."""

    @abc.abstractmethod
    def _check_baseline(self, raw: Any) -> B:
        """Decode a baseline from a file; ValueError (or ValidationError) if it cannot be one
        this detector, as configured, would have learned."""

    @abc.abstractmethod
    def _rollout_regression(self, previous: B, new: B) -> Regression | None:
        """How `new` is worse than the previous version's `previous`, if it is."""

    @abc.abstractmethod
    def _observe(self, record: TelemetryRecord) -> Alert | None: ...

    @abc.abstractmethod
    def _new_state(self, timestamp: float) -> S: ...

    @abc.abstractmethod
    def _encode_state(self, state: S) -> list[Any]: ...

    @abc.abstractmethod
    def _decode_state(self, raw: list[Any]) -> S: ...

    @abc.abstractmethod
    def _encode_baseline(self, baseline: B) -> Any: ...

    @abc.abstractmethod
    def _decode_baseline(self, raw: Any) -> B: ...

    @property
    def tracked_versions(self) -> int:
        """Versions held in memory now (for memory measurements and tests)."""
        return len(self._versions.states)

    def state_dict(self) -> dict[str, Any]:
        watermark = self._versions.watermark
        return {
            "version": self.state_version,
            "watermark": watermark if watermark > float("-inf") else None,
            "versions": [
                [model_id, version, *self._encode_state(state)]
                for (model_id, version), state in self._versions.states.items()
            ],
            "history": self._history.state_dict(self._encode_baseline),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != self.state_version:
            raise ValueError(f"{self.name} state version {state.get('version')!r} is unknown")
        watermark = state["watermark"]
        self._versions.watermark = float("-inf") if watermark is None else float(watermark)
        self._versions.states = {
            (str(row[0]), str(row[1])): self._decode_state(row[2:]) for row in state["versions"]
        }
        self._history.load_state_dict(state["history"], self._decode_baseline)
