"""PRADA: a client whose query distances stop looking natural is extracting the model.

Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting against DNN Model Stealing Attacks"
(EuroS&P 2019). Per (model, client), each query's minimum L2 distance d_min to the client's
growing set is added to D (`growing_set.py` has the algorithm and its sources); every
`test_every` = 10 new distances (the released code's cadence) D is tested once it holds
`min_samples` = 100 usable distances, and the client is flagged when Shapiro–Wilk W < δ. W is
taken over each class's distances standardised by that class's own mean and std
(`growing_set.check_distances` says why: pooled raw, a benign client's favourite and rare
classes make a mixture that is not normal, which is what raised benign false alarms).

δ is per model. The paper sets it by hand (values between about 0.87 and 0.96); here each
(model, version) learns it from its own benign clients (`prada_calibration.py` derives the
fit): the lowest W of each of the first `calibration_clients` clients to be tested, a robust
log-normal tail fit, and δ such that a benign client alarms with probability
`false_alarm_rate` over its whole life. A version still learning uses the model's latest
learned thresholds, and a model that has learned none yet uses `prior_delta` (0.8: the
lowest δ the same fit gave at 10⁻³ on natural 64-feature data — 0.90 on scikit-learn's
digits as they are, 0.80–0.86 on three simulated hours of them with handwriting jitter). A δ
set in the configuration (`delta`, or per model in `models`, which `mlwarden calibrate`
fills from a recording) wins over all of these. Alerts say which one they used.

One addition, `min_relative_spread`: i.i.d. random queries (Tramèr et al.'s uniform
queries) give d_min that is *more* normal than natural data — W ≈ 0.98 on 64 uniform
features, where benign digits give 0.93–0.97 — so PRADA's test cannot see them. Their
distances are instead concentrated: std/mean of D is ≈ 0.06–0.07, against ≈ 0.25 for natural
data, because distances between random high-dimensional points concentrate (Beyer et al.,
"When is nearest neighbor meaningful?", ICDT 1999) while natural inputs lie on a
low-dimensional manifold with varying density. D with std/mean below the floor trips the
detector too. The floor is off (0) unless configured, or learned with δ when
`learn_spread_floor` is on (then the two tests share the false-alarm budget). It is not
learned by default because it is not robust to drift: noisier inputs concentrate every
client's distances, not only an attacker's. On the simulator's sudden drift (a new scanner:
more noise, less contrast) the floor learned before it (0.147) flagged 20 benign clients
whose spread fell to 0.143–0.146, while their W stayed at 0.98–0.99.

Alerts are per incident: the first failed test opens one (fingerprint from the event that
opened it); later failures extend it; it closes after `incident_quiet_seconds` of event time
without a failed test. Time is the event-time watermark only; a client idle for
`idle_seconds` starts over and its state is dropped. Featureless records are ignored.
Clients are independent, so each one's events in a batch are measured together
(vectorised); the tests are then judged in event order, because learning the thresholds
links clients and the freeze point must not depend on how the stream was batched.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
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
from mlwarden.detectors.prada_calibration import Learned, ThresholdLearner, fit_thresholds
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_STATE_VERSION = 2
Observer = Callable[[str, str, DistanceCheck], None]


class PradaLimits(BaseModel):
    """The two alarm thresholds. Unset, δ is learned per model version (and so is the floor,
    with `learn_spread_floor`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delta: float | None = Field(
        default=None, gt=0, le=1, description="Alarm when Shapiro–Wilk W < δ (unset: learned)."
    )
    min_relative_spread: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Alarm when std/mean of D < this (0 = off; unset: learned or off).",
    )


class PradaConfig(PradaLimits):
    """Defaults follow the authors' code; `models` sets the thresholds per model."""

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
    false_alarm_rate: float = Field(
        default=1e-3,
        gt=0,
        lt=0.5,
        description="Share of benign clients the learned thresholds let alarm, ever.",
    )
    calibration_clients: int = Field(
        default=40, ge=10, le=1000, description="Clients a model version learns thresholds from."
    )
    learn_spread_floor: bool = Field(
        default=False,
        description="Learn min_relative_spread too (not robust to input drift; see docs).",
    )
    prior_delta: float = Field(
        default=0.8, gt=0, le=1, description="δ of a model that has learned none yet."
    )
    models: dict[str, PradaLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window_holds_a_sample(self) -> Self:
        if self.distance_window < self.min_samples:
            raise ValueError("distance_window must be at least min_samples")
        return self

    def limits_for(self, model_id: str) -> PradaLimits:
        """The configured thresholds of a model: its own entry first, then the global ones."""
        own = self.models.get(model_id)
        if own is None:
            return self
        return PradaLimits(
            delta=self.delta if own.delta is None else own.delta,
            min_relative_spread=self.min_relative_spread
            if own.min_relative_spread is None
            else own.min_relative_spread,
        )


@dataclass(frozen=True, slots=True)
class _Thresholds:
    delta: float
    min_relative_spread: float
    delta_source: str  # configured | learned | prior
    spread_source: str  # configured | learned | off
    learned: Learned | None

    def evidence(self) -> dict[str, Any]:
        learned = self.learned
        return {
            "delta": self.delta,
            "delta_source": self.delta_source,
            "min_relative_spread": self.min_relative_spread,
            "min_relative_spread_source": self.spread_source,
            "learned_from": None
            if learned is None
            else {"model_version": learned.version, "clients": learned.clients},
        }


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


@dataclass(frozen=True, slots=True)
class _Test:
    """One test's outcome and the client as it stood then, waiting to be judged."""

    index: int
    record: TelemetryRecord
    client: _Client
    check: DistanceCheck
    g_size: int
    queries: int
    recent_ids: tuple[str, ...]


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
        self._learner = ThresholdLearner(
            self.config.calibration_clients,
            self.config.false_alarm_rate,
            self.config.idle_seconds,
            learn_spread=self.config.learn_spread_floor,
        )

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
        tests: list[_Test] = []
        # Clients are independent, so each one's events run together (vectorised); the tests
        # are then judged in event order. Last-touched clients go to the end.
        for key, items in sorted(groups.items(), key=lambda kv: kv[1][-1][0]):
            tests.extend(self._client_events(key, items, marks))
            self._clients.move_to_end(key)
        alerts = []
        for test in sorted(tests, key=lambda t: t.index):
            alert = self._judge(test, marks[test.index])
            if alert is not None:
                alerts.append(alert)
        self._expire_idle()
        return alerts

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
    ) -> list[_Test]:
        """Split where the client must start over (idle, new feature width), run each run."""
        out: list[_Test] = []
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
                    out.extend(self._run(client, run))
                run = []
                client = self._new_client(len(values), record.timestamp)
                self._clients[key] = client
                last = record.timestamp
            run.append(item)
            last = max(last, record.timestamp)
        if client is not None and run:
            out.extend(self._run(client, run))
        return out

    def _run(self, client: _Client, run: list[_Item]) -> list[_Test]:
        cfg = self.config
        labels = [predicted_label(record) if cfg.per_class else "*" for _, record, _ in run]
        matrix = np.array([values for _, _, values in run], dtype=np.float32)
        observed = client.gset.observe(matrix, labels)
        out: list[_Test] = []
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
            if check is not None:
                out.append(
                    _Test(
                        index,
                        record,
                        client,
                        check,
                        g_size,
                        client.queries,
                        tuple(client.recent_ids),
                    )
                )
        return out

    def _thresholds(self, record: TelemetryRecord) -> _Thresholds:
        """Configured first, then what the model version (or the model) learned, then the prior."""
        configured = self.config.limits_for(record.model_id)
        learned = self._learner.limits((record.model_id, record.model_version))
        if configured.delta is not None:
            delta, delta_source = configured.delta, "configured"
        elif learned is not None and learned.delta is not None:
            delta, delta_source = learned.delta, "learned"
        else:
            delta, delta_source = self.config.prior_delta, "prior"
        if configured.min_relative_spread is not None:
            spread, spread_source = configured.min_relative_spread, "configured"
        elif learned is not None and learned.min_relative_spread is not None:
            spread, spread_source = learned.min_relative_spread, "learned"
        else:
            spread, spread_source = 0.0, "off"
        used = learned if "learned" in (delta_source, spread_source) else None
        return _Thresholds(delta, spread, delta_source, spread_source, used)

    def _judge(self, test: _Test, watermark: float) -> Alert | None:
        record, check, client = test.record, test.check, test.client
        if self._observer is not None:
            self._observer(record.model_id, record.client_id, check)
        self._learner.observe(
            (record.model_id, record.model_version),
            record.client_id,
            check.w,
            check.spread,
            ts=record.timestamp,
            watermark=watermark,
        )
        limits = self._thresholds(record)
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
                "relative_spread": None if check.spread is None else round(check.spread, 6),
                **limits.evidence(),
                "distances_tested": check.samples,
                "d_min": check.d_min_summary(),
                "growing_set_size": test.g_size,
                "queries_seen": test.queries,
                "per_class": self.config.per_class,
                "sample_event_ids": list(test.recent_ids),
            },
        )

    def _expire_idle(self) -> None:
        drop_idle(self._clients, self._watermark - self.config.idle_seconds, lambda c: c.last_ts)
        self._learner.expire(self._watermark)

    @property
    def tracked_clients(self) -> int:
        """(model, client) pairs held in memory now."""
        return len(self._clients)

    def learned_limits(self, model_id: str, model_version: str) -> Learned | None:
        """The thresholds learned for a model version (or borrowed from the model's latest)."""
        return self._learner.limits((model_id, model_version))

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
            "thresholds": self._learner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") not in (1, _STATE_VERSION):  # 1: before learned thresholds
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
        if "thresholds" in state:
            self._learner.load_state_dict(state["thresholds"])
        else:
            self._learner.load_state_dict({"learning": [], "frozen": []})


def calibrate_limits(
    benign: Iterable[TelemetryRecord],
    *,
    false_alarm_rate: float = 1e-3,
    config: PradaConfig | None = None,
    batch_size: int = 2000,
    min_clients: int = 20,
) -> dict[str, PradaLimits]:
    """Per-model δ (and spread floor, with `learn_spread_floor`) from a benign recording.

    The recording is replayed through this detector; each client's lowest W and spread over
    its whole life go into the same fit the online calibration uses
    (`prada_calibration.fit_thresholds`). The recording should look like production. The
    result is meant for `config.models`; an unfitted floor comes back as 0 (off).
    """
    cfg = config or PradaConfig()
    if not 0.0 < false_alarm_rate < 0.5:
        raise ConfigError("false_alarm_rate must lie in (0, 0.5)")
    lowest_w: dict[str, dict[str, float]] = {}
    lowest_spread: dict[str, dict[str, float]] = {}

    def observe(model_id: str, client_id: str, check: DistanceCheck) -> None:
        if check.w is not None:
            per_model = lowest_w.setdefault(model_id, {})
            per_model[client_id] = min(per_model.get(client_id, 1.0), check.w)
        if check.spread is not None:
            spreads = lowest_spread.setdefault(model_id, {})
            spreads[client_id] = min(spreads.get(client_id, float("inf")), check.spread)

    detector = PradaDetector(cfg, observer=observe)
    records = iter(benign)
    while batch := list(islice(records, batch_size)):
        detector.update(TelemetryBatch(batch))
    limits: dict[str, PradaLimits] = {}
    for model_id, minima in lowest_w.items():
        if len(minima) < min_clients:
            raise ConfigError(
                f"model {model_id!r}: only {len(minima)} benign clients reached a PRADA test "
                f"(need {min_clients}); record longer or more clients"
            )
        spreads = lowest_spread.get(model_id, {}).values() if cfg.learn_spread_floor else None
        delta, floor = fit_thresholds(minima.values(), spreads, false_alarm_rate)
        limits[model_id] = PradaLimits(delta=delta, min_relative_spread=floor or 0.0)
    return limits
