"""PRADA: a client whose query distances stop looking natural is extracting the model.

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing Attacks"
(EuroS&P 2019). Per (model, client), each query's minimum L2 distance d_min to the client's
growing set is added to D (`growing_set.py` has the algorithm and its sources); every
`test_every` = 10 new distances (the released code's cadence) D is tested once it holds
`min_samples` = 100 usable distances, and the client is flagged when Shapiro–Wilk W < δ.
The paper sets δ per model (values between about 0.87 and 0.96); here δ is calibrated from
benign clients to a target false-alarm rate (`prada_calibration.calibrate_limits`). The
default 0.9 is that calibration on natural 64-feature data (scikit-learn digits) at 10⁻³
per client; 0.95 would flag 15% of those benign clients. Calibrate per model.

One addition, `min_relative_spread`: i.i.d. random queries (Tramèr et al.'s uniform
queries) give d_min that is *more* normal than natural data — W ≈ 0.98 on 64 uniform
features, where benign digits give 0.93–0.97 — so PRADA's test cannot see them. Their
distances are instead concentrated: std/mean of D is ≈ 0.07, against ≈ 0.25 for natural
data, because distances between random high-dimensional points concentrate (Beyer et al.,
"When is nearest neighbor meaningful?", ICDT 1999) while natural inputs lie on a
low-dimensional manifold with varying density. D with std/mean below the floor trips the
detector too. The floor is off (0) until calibrated: benign traffic with many independent
noisy features has concentrated distances as well, so only a model's own benign clients
can say where the floor lies (0.21 for digits).

Alerts are per incident: the first failed test opens one (fingerprint from the event that
opened it); later failures extend it; it closes after `incident_quiet_seconds` of event time
without a failed test. Time is the event-time watermark only; a client idle for
`idle_seconds` starts over and its state is dropped. Featureless records are ignored.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, new_alert
from mlwarden.detectors.client_state import (
    Incident,
    drop_idle,
    extend_or_open,
    pack_array,
    unpack_array,
)
from mlwarden.detectors.columns import feature_vector, predicted_label
from mlwarden.detectors.growing_set import DistanceCheck, GrowingSet, check_distances
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_STATE_VERSION = 1
Observer = Callable[[str, str, DistanceCheck], None]


class PradaLimits(BaseModel):
    """The two alarm thresholds; calibrate them per model on benign traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delta: float = Field(default=0.9, gt=0, le=1, description="Alarm when Shapiro–Wilk W < δ.")
    min_relative_spread: float = Field(
        default=0.0, ge=0, lt=1, description="Alarm when std/mean of D < this (0 = off)."
    )


class PradaConfig(PradaLimits):
    """Defaults follow the authors' code; `models` overrides the thresholds per model."""

    severity: Severity = Severity.WARNING
    per_class: bool = Field(default=True, description="One growing set per predicted class.")
    min_samples: int = Field(default=100, ge=20, le=5000, description="Usable |D| to test.")
    test_every: int = Field(default=10, ge=1, description="New distances between tests.")
    min_class_distances: int = Field(default=10, ge=1, description="Classes tested need this.")
    outlier_sigma: float = Field(default=3.0, gt=0, description="Drop d_min this far out.")
    growing_set_size: int = Field(default=256, ge=8, le=65_536, description="Points kept in G.")
    distance_window: int = Field(default=500, ge=20, le=5000, description="Distances kept (D).")
    idle_seconds: float = Field(default=3600.0, gt=0, description="Idle client starts over.")
    incident_quiet_seconds: float = Field(default=900.0, gt=0)
    models: dict[str, PradaLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window_holds_a_sample(self) -> Self:
        if self.distance_window < self.min_samples:
            raise ValueError("distance_window must be at least min_samples")
        return self

    def limits_for(self, model_id: str) -> PradaLimits:
        return self.models.get(model_id, self)


@dataclass(slots=True)
class _Client:
    gset: GrowingSet
    last_ts: float
    distances: deque[float]
    labels: deque[str]
    queries: int = 0
    since_test: int = 0
    incident: Incident | None = None
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))


_Item = tuple[int, TelemetryRecord, tuple[float, ...]]
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _features(record: TelemetryRecord) -> tuple[float, ...] | None:
    """The feature vector, if it has one that float32 (the stored form) can hold."""
    values = feature_vector(record)
    if not values or max(values) > _FLOAT32_MAX or min(values) < -_FLOAT32_MAX:
        return None
    return values


class PradaDetector(Detector):
    """Alerts once per incident when a client's query distances fail PRADA's test."""

    name: ClassVar[str] = "prada"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = PradaConfig

    def __init__(self, config: PradaConfig | None = None, observer: Observer | None = None) -> None:
        self.config = config or PradaConfig()
        self._observer = observer  # sees every test; calibration collects W from it
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()  # oldest first
        self._watermark = float("-inf")

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        marks: list[float] = []  # the watermark as each event arrives
        groups: dict[tuple[str, str], list[_Item]] = {}
        for index, record in enumerate(batch):
            self._watermark = max(self._watermark, record.timestamp)
            marks.append(self._watermark)
            values = _features(record)
            if values is not None:
                groups.setdefault((record.model_id, record.client_id), []).append(
                    (index, record, values)
                )
        alerts: list[tuple[int, Alert]] = []
        # Clients are independent, so each one's events run together (vectorised); the
        # alerts are then put back in event order. Last-touched clients go to the end.
        for key, items in sorted(groups.items(), key=lambda kv: kv[1][-1][0]):
            alerts.extend(self._client_events(key, items, marks))
            self._clients.move_to_end(key)
        self._expire_idle()
        return [alert for _, alert in sorted(alerts, key=lambda pair: pair[0])]

    def _new_client(self, dim: int, ts: float) -> _Client:
        window = self.config.distance_window
        return _Client(
            gset=GrowingSet(dim, self.config.growing_set_size),
            last_ts=ts,
            distances=deque(maxlen=window),
            labels=deque(maxlen=window),
        )

    def _client_events(
        self, key: tuple[str, str], items: list[_Item], marks: list[float]
    ) -> list[tuple[int, Alert]]:
        """Split where the client must start over (idle, new feature width), run each run."""
        out: list[tuple[int, Alert]] = []
        client = self._clients.get(key)
        last = client.last_ts if client is not None else 0.0
        run: list[_Item] = []
        for item in items:
            index, record, values = item
            stale = client is not None and (
                marks[index] - last > self.config.idle_seconds or len(values) != client.gset.dim
            )
            if client is None or stale:
                if client is not None and run:
                    out.extend(self._run(client, run, marks))
                run = []
                client = self._new_client(len(values), record.timestamp)
                self._clients[key] = client
                last = record.timestamp
            run.append(item)
            last = max(last, record.timestamp)
        if client is not None and run:
            out.extend(self._run(client, run, marks))
        return out

    def _run(
        self, client: _Client, run: list[_Item], marks: list[float]
    ) -> list[tuple[int, Alert]]:
        cfg = self.config
        labels = [predicted_label(record) if cfg.per_class else "*" for _, record, _ in run]
        matrix = np.array([values for _, _, values in run], dtype=np.float32)
        observed = client.gset.observe(matrix, labels)
        out: list[tuple[int, Alert]] = []
        for (index, record, _), label, (d_min, g_size) in zip(run, labels, observed, strict=True):
            client.last_ts = max(client.last_ts, record.timestamp)
            client.queries += 1
            client.recent_ids.append(record.event_id)
            if d_min is None:
                continue
            client.distances.append(d_min)
            client.labels.append(label)
            client.since_test += 1
            if client.since_test < cfg.test_every:
                continue
            client.since_test = 0
            check = check_distances(
                np.fromiter(client.distances, dtype=np.float64, count=len(client.distances)),
                list(client.labels),
                min_class_distances=cfg.min_class_distances,
                outlier_sigma=cfg.outlier_sigma,
                min_samples=cfg.min_samples,
            )
            if check is None:
                continue
            if self._observer is not None:
                self._observer(record.model_id, record.client_id, check)
            alert = self._judge(record, client, check, g_size, marks[index])
            if alert is not None:
                out.append((index, alert))
        return out

    def _judge(
        self,
        record: TelemetryRecord,
        client: _Client,
        check: DistanceCheck,
        g_size: int,
        watermark: float,
    ) -> Alert | None:
        limits = self.config.limits_for(record.model_id)
        if check.w is not None and check.w < limits.delta:
            trigger, score, threshold = "shapiro_wilk", check.w, limits.delta
        elif check.spread is not None and check.spread < limits.min_relative_spread:
            trigger, score, threshold = (
                "distance_concentration",
                check.spread,
                limits.min_relative_spread,
            )
        else:
            return None
        client.incident, opened = extend_or_open(
            client.incident,
            self.name,
            record,
            watermark=watermark,
            quiet_seconds=self.config.incident_quiet_seconds,
        )
        if not opened:
            return None
        why = (
            f"Shapiro–Wilk W={score:.3f} < δ={threshold:g}"
            if trigger == "shapiro_wilk"
            else f"std/mean of d_min {score:.3f} < {threshold:g} (random-looking queries)"
        )
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=self.config.severity,
            fingerprint=client.incident.fingerprint,
            record=record,
            client_id=record.client_id,
            score=round(score, 6),
            threshold=threshold,
            summary=(
                f"client {record.client_id} queried {record.model_id} like a model-extraction "
                f"attack: {why} over {check.samples} minimum distances (PRADA)"
            ),
            evidence={
                "trigger": trigger,
                "shapiro_w": None if check.w is None else round(check.w, 6),
                "delta": limits.delta,
                "relative_spread": None if check.spread is None else round(check.spread, 6),
                "min_relative_spread": limits.min_relative_spread,
                "distances_tested": check.samples,
                "d_min": check.d_min_summary(),
                "growing_set_size": g_size,
                "queries_seen": client.queries,
                "per_class": self.config.per_class,
                "sample_event_ids": list(client.recent_ids),
            },
        )

    def _expire_idle(self) -> None:
        drop_idle(self._clients, self._watermark - self.config.idle_seconds, lambda c: c.last_ts)

    @property
    def tracked_clients(self) -> int:
        """(model, client) pairs held in memory now."""
        return len(self._clients)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._watermark if self._clients else None,
            "clients": [
                [
                    model_id,
                    client_id,
                    c.gset.state_dict(),
                    c.last_ts,
                    pack_array(np.fromiter(c.distances, dtype=np.float64, count=len(c.distances))),
                    list(c.labels),
                    c.queries,
                    c.since_test,
                    None if c.incident is None else c.incident.to_json(),
                    list(c.recent_ids),
                ]
                for (model_id, client_id), c in self._clients.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"prada state version {state.get('version')!r} is unknown")
        self._clients.clear()
        watermark = state["watermark"]
        self._watermark = float("-inf") if watermark is None else float(watermark)
        window = self.config.distance_window
        for model_id, client_id, gset, last_ts, dists, labels, queries, since, inc, ids in state[
            "clients"
        ]:
            self._clients[(model_id, client_id)] = _Client(
                gset=GrowingSet.from_state(gset, self.config.growing_set_size),
                last_ts=last_ts,
                distances=deque(unpack_array(dists, np.float64).tolist(), maxlen=window),
                labels=deque(labels, maxlen=window),
                queries=queries,
                since_test=since,
                incident=Incident.from_json(inc),
                recent_ids=deque(ids, maxlen=_SAMPLE_IDS),
            )
