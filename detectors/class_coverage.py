"""Class coverage: a client whose predicted classes cover the label space unnaturally evenly.

Real users ask a model about the few things they care about; an extraction attack (Tramer et
al. 2016; Orekondy et al. 2019, "Knockoff Nets") wants every class represented. The statistic
is the normalised Shannon entropy h = H(histogram) / log K of the client's predicted classes
over its last `window` queries (K = the model's label-space size). We chose entropy over a
chi-square test against the uniform or the population mix because benign clients are not a
multinomial draw from the population mix — each has favourites (overdispersion) — so an
analytic null would flag half of them; what matters is how even a client is *relative to
other clients*, and h is label-free, bounded and comparable between models.

Calibration is empirical and per model (Efron 2004, "empirical null"): a plug-in entropy is
biased by the sample size, so clients are compared only at fixed query counts ("levels":
`min_queries`, doubled up to `window`; past it, every `stride` queries over the last
`window`). For each level a histogram of t = -log(1 - h), one sample per unflagged client
when it reaches the level, estimates the benign median and the spread of the upper half,
(q90 - q50) / z_0.9; a client alerts when its t exceeds median + z_(1-alpha) x spread. The
normal tail is extrapolated from the bulk because an empirical 1e-6 quantile would need
millions of clients; benign evenness is bounded, so its real tail is lighter than the
normal one and the extrapolation errs toward silence. One sample per client keeps a heavy
client (or an attacker not yet flagged) from outvoting the rest of the population.

One alert per incident: the first test over threshold opens it, later ones extend it; it
closes at the first test under threshold `quiet_seconds` after the last one over, or when
the client expires after `idle_seconds` without queries.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint, new_alert
from mlwarden.detectors.client_state import check_state_version
from mlwarden.detectors.columns import predicted_label
from mlwarden.detectors.coverage_null import LevelNull, normalised_entropy
from mlwarden.detectors.online import IdleTable, IncidentConfig, close_if_quiet, flag
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_STATE_VERSION = 1


class ClassCoverageConfig(IncidentConfig):
    """Window, levels, the test's level alpha and how much population calibrates it."""

    window: int = Field(default=200, ge=10, description="Last N predictions per client.")
    min_queries: int = Field(default=50, ge=5, description="First test at this many queries.")
    stride: int = Field(default=50, ge=1, description="Re-test every N queries, full window.")
    alpha: float = Field(default=1e-6, gt=0, lt=0.5, description="False alarms per test.")
    min_population: int = Field(default=100, ge=10, description="Client samples per level.")
    population_memory: int = Field(default=5_000, ge=100, description="Halve counts above.")
    min_spread: float = Field(default=0.05, gt=0, description="Floor on the null's spread.")
    max_classes: int = Field(default=1_000, ge=2, le=65_535)

    @model_validator(mode="after")
    def _consistent(self) -> ClassCoverageConfig:
        if self.min_queries > self.window:
            raise ValueError("min_queries must be <= window")
        if 2 * self.min_population > self.population_memory:
            raise ValueError("population_memory must be >= 2 x min_population")
        return self

    @property
    def levels(self) -> list[int]:
        """Query counts at which clients are compared: min_queries, doubled, then window."""
        levels, n = [], self.min_queries
        while n < self.window:
            levels.append(n)
            n *= 2
        return [*levels, self.window]


@dataclass(slots=True)
class _Client:
    seen: int = 0  # predictions ever counted (while tracked)
    head: int = 0  # oldest slot of the ring once it is full
    ring: array[int] = field(default_factory=lambda: array("H"))
    counts: dict[int, int] = field(default_factory=dict)
    incident: list[Any] | None = None  # [fingerprint, opened_at, last_alarm_ts]
    ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))

    def push(self, label: int, window: int) -> None:
        if len(self.ring) < window:
            self.ring.append(label)
        else:
            old = self.ring[self.head]
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
            self.ring[self.head] = label
            self.head = (self.head + 1) % window
        self.counts[label] = self.counts.get(label, 0) + 1
        self.seen += 1

    def chronological(self) -> list[int]:
        return [*self.ring[self.head :], *self.ring[: self.head]]


@dataclass(slots=True)
class _Model:
    labels: dict[str, int] = field(default_factory=dict)
    width: int = 0  # widest probability vector seen
    nulls: dict[int, LevelNull] = field(default_factory=dict)

    @property
    def classes(self) -> int:
        return max(self.width, len(self.labels))

    def histogram(self, counts: dict[int, int]) -> dict[str, int]:
        """Counts by label name (labels past `max_classes` share one "(other)" bin)."""
        names = {index: label for label, index in self.labels.items()}
        return {names.get(i, "(other)"): n for i, n in sorted(counts.items())}


class ClassCoverageDetector(Detector):
    """Alerts once per incident when a client's predictions are far more even than others'."""

    name: ClassVar[str] = "class_coverage"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = ClassCoverageConfig

    def __init__(self, config: ClassCoverageConfig | None = None) -> None:
        self.config = config or ClassCoverageConfig()
        self.levels = self.config.levels
        self.z = NormalDist().inv_cdf(1.0 - self.config.alpha)
        self._clients: IdleTable[_Client] = IdleTable(self.config.idle_seconds)
        self._models: dict[str, _Model] = {}

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._clients.advance(record.timestamp, None)
            alert = self._observe(record)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _label_index(self, model: _Model, record: TelemetryRecord) -> int:
        label = predicted_label(record)
        index = model.labels.get(label)
        if index is None:
            cap = self.config.max_classes
            if len(model.labels) < cap - 1:
                index = model.labels[label] = len(model.labels)
            else:  # the label space is full: the rest share the last index, "(other)"
                index, model.width = cap - 1, cap
        probabilities = record.probabilities
        if probabilities is not None and len(probabilities) > model.width:
            model.width = min(len(probabilities), self.config.max_classes)
        return index

    def _level(self, seen: int) -> int | None:
        """The level a client is tested at after `seen` predictions, if any."""
        window = self.config.window
        if seen < window:
            return seen if seen in self.levels else None
        return window if (seen - window) % self.config.stride == 0 else None

    def _observe(self, record: TelemetryRecord) -> Alert | None:
        cfg, now = self.config, record.timestamp
        model = self._models.setdefault(record.model_id, _Model())
        label = self._label_index(model, record)
        key = (record.model_id, record.client_id)
        client = self._clients.get(key) or _Client()
        self._clients.put(key, now, client)
        client.push(label, cfg.window)
        client.ids.append(record.event_id)
        level = self._level(client.seen)
        if level is None or model.classes < 2:
            return None
        h = normalised_entropy(client.counts.values(), level, model.classes)
        t = LevelNull.transform(h)
        calibration = self._threshold(model, level)
        if calibration is not None and t > calibration[0]:
            opened = flag(
                client,
                now,
                lambda: incident_fingerprint(
                    self.name, record.model_id, record.client_id, record.event_id
                ),
            )
            return self._alert(record, client, model, level, h, t, *calibration) if opened else None
        close_if_quiet(client, now, cfg.quiet_seconds)
        # One sample per client and level (a heavy client is one client, not a hundred), and
        # never from a flagged client: the null is the per-client distribution of the benign.
        if client.incident is None and client.seen == level:
            model.nulls.setdefault(level, LevelNull()).add(t, cfg.population_memory)
        return None

    def _threshold(self, model: _Model, level: int) -> tuple[float, int] | None:
        """(threshold on t, level it was calibrated at): this level's, or while it still has
        too few samples, the nearest smaller calibrated level's. Benign evenness is noisier at
        smaller counts, so a smaller level's threshold is the higher, conservative one."""
        cfg = self.config
        for candidate in reversed([lv for lv in self.levels if lv <= level]):
            null = model.nulls.get(candidate)
            if null is not None:
                threshold = null.threshold(self.z, cfg.min_population, cfg.min_spread)
                if threshold is not None:
                    return threshold, candidate
        return None

    def _alert(
        self,
        record: TelemetryRecord,
        client: _Client,
        model: _Model,
        level: int,
        h: float,
        t: float,
        threshold: float,
        calibrated_at: int,
    ) -> Alert:
        assert client.incident is not None
        null = model.nulls[calibrated_at]
        median, spread = null.fit(self.config.min_spread)
        h_threshold = 1.0 - math.exp(-threshold)
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=self.config.severity,
            fingerprint=client.incident[0],
            record=record,
            client_id=record.client_id,
            score=round(h, 6),
            threshold=round(h_threshold, 6),
            summary=(
                f"client {record.client_id}: its last {level} predictions from "
                f"{record.model_id} spread over {len(client.counts)} of {model.classes} "
                f"classes with normalised entropy {h:.3f}, above the population's "
                f"{h_threshold:.3f} (alpha={self.config.alpha:g}); typical clients: "
                f"{1.0 - math.exp(-median):.3f}"
            ),
            evidence={
                "statistic": "normalised_entropy",
                "value": round(h, 6),
                "threshold": round(h_threshold, 6),
                "log_deficit": round(t, 6),
                "log_deficit_threshold": round(threshold, 6),
                "alpha": self.config.alpha,
                "window_queries": level,
                "classes": model.classes,
                "classes_covered": len(client.counts),
                "histogram": model.histogram(client.counts),
                "population_median": round(1.0 - math.exp(-median), 6),
                "population_spread": round(spread, 6),
                "population_samples": null.total,
                "population_level": calibrated_at,
                "opening_event_id": record.event_id,
                "sample_event_ids": list(client.ids),
            },
            labels={"pattern": "class_coverage"},
        )

    @property
    def tracked_clients(self) -> int:
        return len(self._clients)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._clients.saved_watermark,
            "models": {
                m: [model.labels, model.width, {str(k): v.bins for k, v in model.nulls.items()}]
                for m, model in self._models.items()
            },
            "clients": [
                [m, c, last_ts, s.seen, s.chronological(), s.incident, list(s.ids)]
                for (m, c), last_ts, s in self._clients.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, _STATE_VERSION)
        window = self.config.window
        self._models = {
            m: _Model(labels, width, {int(k): LevelNull(bins) for k, bins in nulls.items()})
            for m, (labels, width, nulls) in state["models"].items()
        }

        def client(seen: int, labels: list[int], incident: Any, ids: list[str]) -> _Client:
            restored = _Client(seen=seen - len(labels), incident=incident)
            for label in labels:
                restored.push(label, window)
            restored.ids.extend(ids)
            return restored

        self._clients.restore(
            state["watermark"],
            (
                (m, c, ts, client(seen, labels, inc, ids))
                for m, c, ts, seen, labels, inc, ids in state["clients"]
            ),
        )
