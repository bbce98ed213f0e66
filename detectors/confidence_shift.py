"""Confidence shift: the model became less (or oddly more) sure of itself than its baseline.

Top-1 probability, entropy and the top1-top2 margin react before labels arrive: evasion
attempts, out-of-distribution traffic and broken features all push them. Per (model_id,
model_version) the first `baseline_size` events with probabilities give each statistic's mean
and std; records without probabilities are skipped. Every `evaluate_every` (K) events:

* FAST: z of the mean of the latest `window_size` (M) events, with the standard error of a
  difference of two means, sigma * sqrt(1/M + 1/N): the baseline is a sample too.
* SLOW: a two-sided CUSUM over the block means of the last K events, standardised by
  sigma / sqrt(K). Block means rather than single events because top-1 probabilities are
  bounded and skewed: on skewed single events a CUSUM alarms several times sooner than
  the Gaussian formula says, on means of K it stays close to it (both tested). k and h come
  from `drift_stats.block_cusum` (k: half of `cusum_shift_sigmas`; h: Siegmund, guarded
  against the baseline's own estimation error).

Clustered traffic: clients send sessions of queries with their own class mix, so window means
vary more between windows than sigma / sqrt(n) says, and successive block means are correlated
(a session spans many blocks). Both the baseline and each window therefore keep per-client
sums, and every standard error is the cluster one (`drift_stats.mean_design_effects`, clients
as clusters, design effect d >= 1):

* FAST: the standard error is sqrt(V_window + V_baseline), each from its own client totals.
* SLOW: block means are standardised by sigma * sqrt(d / K), d the baseline's design effect at
  `baseline_size` events, a stand-in for the long-run variance of block means over the CUSUM's
  horizon (a CUSUM's run length is governed by the long-run, not the one-block, variance).
  k is the configured shift in those units, k = shift/2 * sqrt(K / d), and h is re-solved per
  version by Siegmund with the same guard; should d be so large that k falls below 1.5 guards,
  k is raised to 1.5 guards (the baseline is too clustered to resolve the configured shift).
  With d = 1 (one event per client) all of this is the i.i.d. detector exactly.

Both paths for three statistics are six alarm sources sharing one false-alarm budget
(`expected_run_length_events`, split evenly; see `drift_stats`). One incident per version,
closed after `close_after` clean evaluations. CUSUM sums stop at h + 4k: a long shift would
otherwise pile up a sum that takes hours to drain, keeping the incident open long after the
shift ended; capped, they fall below h a few evaluations after it ends.

When a new version's baseline freezes, its means are compared with the previous version's
(same z limit): top-1 or margin lower, or entropy higher, by at least
`rollout_min_effect_sigmas` is one critical regression alert (`rollout_checks`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, Field, Strict, TypeAdapter, model_validator

from mlwarden.detectors.base import new_alert
from mlwarden.detectors.columns import confidence, probability_vector
from mlwarden.detectors.drift_stats import (
    RunningMoments,
    Summary,
    block_cusum,
    cusum_limit,
    mean_design_effects,
    sig,
    two_sided_z,
)
from mlwarden.detectors.rollout_checks import Regression, confidence_regression
from mlwarden.detectors.versioned_drift import (
    SAMPLE_IDS,
    Incident,
    VersionedDriftDetector,
    WindowedDriftConfig,
)
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord

STATISTICS = ("top1", "entropy", "margin")
_WORSE = (-1.0, 1.0, -1.0)  # the direction in which each statistic means a worse model
_LARGEST = (1.0, 50.0, 1.0)  # bounds on a fitted mean or std (entropy: nats, e^50 classes)
_SOURCES = 2 * len(STATISTICS)
_CAP_KS = 4.0  # CUSUM sums stop at h + _CAP_KS * k: below h ~4 evaluations after a shift ends
_MIN_K_GUARDS = 1.5  # a clustered baseline's CUSUM reference stays this many guards above it

ClientSums = dict[str, list[float]]
"""Per client: [events, sum of top1, sum of entropy, sum of margin]."""

_Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_Three = tuple[_Finite, _Finite, _Finite]
_ENCODED_SUMMARY: TypeAdapter[tuple[int, _Three, _Three, _Three]] = TypeAdapter(
    tuple[Annotated[int, Strict()], _Three, _Three, _Three]
)
"""What `Summary.encode` writes for (top1, entropy, margin), as a baseline file must hold it."""


def _add_client(clients: ClientSums, client: str, values: tuple[float, float, float]) -> None:
    row = clients.get(client)
    if row is None:
        row = clients[client] = [0.0] * (1 + len(STATISTICS))
    row[0] += 1.0
    for i, value in enumerate(values):
        row[i + 1] += value


def _merge(blocks: deque[ClientSums]) -> ClientSums:
    merged: ClientSums = {}
    for block in blocks:
        for client, row in block.items():
            target = merged.get(client)
            if target is None:
                merged[client] = list(row)
            else:
                for i, value in enumerate(row):
                    target[i] += value
    return merged


class ConfidenceShiftConfig(WindowedDriftConfig):
    """Windowed drift settings plus the slow path's target shift and a floor on baseline std."""

    cusum_shift_sigmas: float = Field(
        default=0.15, gt=0, description="Per-event mean shift (baseline stds) the CUSUM targets."
    )
    min_std: float = Field(
        default=0.01, gt=0, description="Floor on a baseline std (a one-hot model has std 0)."
    )
    rollout_min_effect_sigmas: float = Field(
        default=0.1, ge=0, description="Smallest rollout change (previous stds) reported."
    )

    @model_validator(mode="after")
    def _cusum_is_calibratable(self) -> Self:
        try:
            cusum_parameters(self)
        except ValueError as error:
            raise ValueError(f"{error} (raise cusum_shift_sigmas or baseline_size)") from None
        return self


def cusum_parameters(config: ConfidenceShiftConfig) -> tuple[float, float, float]:
    """(k, h, guard) of each one-sided CUSUM, in standard units of a block mean."""
    return block_cusum(
        shift_sigmas=config.cusum_shift_sigmas,
        block=config.evaluate_every,
        baseline_size=config.baseline_size,
        # Two sides of each of the three CUSUMs: each side gets 1/(2 * _SOURCES) of the rate.
        run_length_events=2 * _SOURCES * config.expected_run_length_events,
    )


@dataclass(slots=True)
class _Version:
    last_ts: float
    blocks: deque[list[float]]
    client_blocks: deque[ClientSums]
    moments: list[RunningMoments] = field(
        default_factory=lambda: [RunningMoments() for _ in STATISTICS]
    )
    reference: Summary | None = None
    baseline_clients: ClientSums = field(default_factory=dict)  # emptied when it freezes
    cusum_k: list[float] = field(default_factory=list)  # per statistic, set when it freezes
    cusum_h: list[float] = field(default_factory=list)
    block: list[float] = field(default_factory=lambda: [0.0] * len(STATISTICS))
    block_clients: ClientSums = field(default_factory=dict)
    seen: int = 0
    upper: list[float] = field(default_factory=lambda: [0.0] * len(STATISTICS))
    lower: list[float] = field(default_factory=lambda: [0.0] * len(STATISTICS))
    incident: Incident | None = None
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLE_IDS))


_DESCRIPTION = {"top1": "top-1 probability", "entropy": "entropy", "margin": "top1-top2 margin"}


@dataclass(frozen=True, slots=True)
class _Alarm:
    statistic: int
    path: str  # "fast" (window z) or "slow" (CUSUM)
    value: float  # signed: z, or +upper / -lower CUSUM sum
    threshold: float

    @property
    def ratio(self) -> float:
        return abs(self.value) / self.threshold


class ConfidenceShiftDetector(VersionedDriftDetector[_Version, Summary]):
    """Alerts once per incident when a version's confidence statistics leave their baseline."""

    name: ClassVar[str] = "confidence_shift"
    kind: ClassVar[AlertKind] = AlertKind.CONFIDENCE_SHIFT
    config_model: ClassVar[type[BaseModel]] = ConfidenceShiftConfig
    state_version: ClassVar[int] = 2  # 2: per-client sums, per-version CUSUM parameters

    def __init__(self, config: ConfidenceShiftConfig | None = None) -> None:
        self.config = config or ConfidenceShiftConfig()
        self.z_limit = two_sided_z(self.config.alpha(_SOURCES))
        self.cusum_k, self.cusum_h, self.cusum_guard = cusum_parameters(self.config)
        self._root_k = math.sqrt(self.config.evaluate_every)
        super().__init__(self.config)

    def _new_state(self, timestamp: float) -> _Version:
        blocks = self.config.blocks
        return _Version(
            last_ts=timestamp, blocks=deque(maxlen=blocks), client_blocks=deque(maxlen=blocks)
        )

    def clustered_cusum(self, design_effect: float) -> tuple[float, float]:
        """(k, h) of a CUSUM over block means whose long-run variance is `design_effect` x i.i.d."""
        if design_effect <= 1.0:
            return self.cusum_k, self.cusum_h
        k = max(self.cusum_k / math.sqrt(design_effect), _MIN_K_GUARDS * self.cusum_guard)
        run_length = 2 * _SOURCES * self.config.expected_run_length_events
        return k, cusum_limit(k, run_length / self.config.evaluate_every, self.cusum_guard)

    def _observe(self, record: TelemetryRecord) -> Alert | None:
        probabilities = probability_vector(record)
        if probabilities is None:
            return None
        config = self.config
        c = confidence(probabilities)
        state = self._state_of(record)
        state.recent_ids.append(record.event_id)
        values = (c.top1, c.entropy, c.margin)
        if state.reference is None:
            for moments, value in zip(state.moments, values, strict=True):
                moments.add(value)
            _add_client(state.baseline_clients, record.client_id, values)
            if state.moments[0].count < config.baseline_size:
                return None
            stds = tuple(max(m.std, config.min_std) for m in state.moments)
            effects = mean_design_effects(state.baseline_clients, stds)[1]
            reference = Summary(
                config.baseline_size,
                tuple(m.mean for m in state.moments),
                stds,
                tuple(effects),
            )
            self._adopt(state, reference)
            return self._frozen(record, state, reference)
        block = state.block
        block[0] += c.top1
        block[1] += c.entropy
        block[2] += c.margin
        _add_client(state.block_clients, record.client_id, values)
        state.seen += 1
        if state.seen % config.evaluate_every:
            return None
        return self._evaluate(record, state)

    def _evaluate(self, record: TelemetryRecord, state: _Version) -> Alert | None:
        config, reference = self.config, state.reference
        assert reference is not None
        per_event = config.evaluate_every
        for i in range(len(STATISTICS)):
            k, h = state.cusum_k[i], state.cusum_h[i]
            cap = h + _CAP_KS * k
            scale = reference.std[i] * math.sqrt(reference.effect(i)) / self._root_k
            x = (state.block[i] / per_event - reference.mean[i]) / scale
            state.upper[i] = min(cap, max(0.0, state.upper[i] + x - k))
            state.lower[i] = min(cap, max(0.0, state.lower[i] - x - k))
        state.blocks.append(state.block)
        state.client_blocks.append(state.block_clients)
        state.block, state.block_clients = [0.0] * len(STATISTICS), {}
        alarms: list[_Alarm] = []
        full = len(state.blocks) == config.blocks
        window = self._window(state, reference) if full else []
        for i in range(len(STATISTICS)):
            h = state.cusum_h[i]
            if full:
                z = window[i][1]
                if abs(z) > self.z_limit:
                    alarms.append(_Alarm(i, "fast", z, self.z_limit))
            if state.upper[i] > h:
                alarms.append(_Alarm(i, "slow", state.upper[i], h))
            if state.lower[i] > h:
                alarms.append(_Alarm(i, "slow", -state.lower[i], h))
        fingerprint = self._opened_incident(record, state, bool(alarms))
        if fingerprint is None:
            return None
        return self._alert(record, state, reference, alarms, fingerprint)

    def _window(self, state: _Version, reference: Summary) -> list[tuple[float, float, float]]:
        """Per statistic, (mean, z, window design effect) of the window against the baseline.

        z's standard error is sqrt(V_window + V_baseline), both clustered by client.
        """
        events = len(state.blocks) * self.config.evaluate_every
        effects = mean_design_effects(_merge(state.client_blocks), reference.std)[1]
        rows = []
        for i in range(len(STATISTICS)):
            mean = sum(block[i] for block in state.blocks) / events
            standard_error = math.hypot(
                reference.std[i] * math.sqrt(effects[i] / events), reference.standard_error(i)
            )
            rows.append((mean, (mean - reference.mean[i]) / standard_error, effects[i]))
        return rows

    def _alert(
        self,
        record: TelemetryRecord,
        state: _Version,
        reference: Summary,
        alarms: list[_Alarm],
        fingerprint: str,
    ) -> Alert:
        main = max(alarms, key=lambda a: (a.ratio, -a.statistic))
        statistics: dict[str, dict[str, Any]] = {}
        window = self._window(state, reference)
        for i, name in enumerate(STATISTICS):
            mean, z, effect = window[i]
            statistics[name] = {
                "baseline_mean": sig(reference.mean[i]),
                "baseline_std": sig(reference.std[i]),
                "baseline_design_effect": sig(reference.effect(i), 4),
                "window_mean": sig(mean),
                "window_design_effect": sig(effect, 4),
                "z": sig(z, 4),
                "cusum_upper": sig(state.upper[i], 4),
                "cusum_lower": sig(state.lower[i], 4),
            }
        name = STATISTICS[main.statistic]
        row = statistics[name]
        events = len(state.blocks) * self.config.evaluate_every
        how = (
            f"z={main.value:+.1f} beyond +/-{main.threshold:.2f}"
            if main.path == "fast"
            else f"CUSUM {abs(main.value):.1f} over {main.threshold:.1f}"
        )
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=self.config.severity,
            fingerprint=fingerprint,
            record=record,
            client_id=None,
            score=sig(abs(main.value)),
            threshold=sig(main.threshold),
            summary=(
                f"mean {_DESCRIPTION[name]} of {record.model_id} v{record.model_version} moved "
                f"from {row['baseline_mean']:.3f} to {row['window_mean']:.3f} over the last "
                f"{events} predictions ({main.path} path: {how})"
            ),
            evidence={
                "statistic": name,
                "path": main.path,
                **row,
                "threshold": sig(main.threshold),
                "z_threshold": sig(self.z_limit),
                "cusum_threshold": sig(state.cusum_h[main.statistic]),
                "cusum_k": sig(state.cusum_k[main.statistic]),
                "window_events": events,
                "baseline_size": reference.count,
                "alarms": [
                    {
                        "statistic": STATISTICS[a.statistic],
                        "path": a.path,
                        "value": sig(a.value, 4),
                        "threshold": sig(a.threshold, 4),
                    }
                    for a in alarms
                ],
                "statistics": statistics,
                "sample_event_ids": list(state.recent_ids),
            },
            labels={"statistic": name, "path": main.path},
        )

    def _rollout_regression(self, previous: Summary, new: Summary) -> Regression | None:
        """The new version's baseline against its predecessor's, at the fast path's z limit."""
        return confidence_regression(
            previous,
            new,
            names=STATISTICS,
            worse=_WORSE,
            z_limit=self.z_limit,
            min_effect_sigmas=self.config.rollout_min_effect_sigmas,
        )

    def baseline_config(self) -> dict[str, Any]:
        return {"baseline_size": self.config.baseline_size, "min_std": self.config.min_std}

    def _looks_at(self, record: TelemetryRecord) -> bool:
        return probability_vector(record) is not None

    def _baseline_of(self, state: _Version) -> Summary | None:
        return state.reference

    def _adopt(self, state: _Version, baseline: Summary) -> None:
        """Freeze `baseline` for the version: its CUSUMs are fitted to its design effects."""
        state.reference = baseline
        parameters = [self.clustered_cusum(baseline.effect(i)) for i in range(len(STATISTICS))]
        state.cusum_k = [k for k, _ in parameters]
        state.cusum_h = [h for _, h in parameters]
        state.moments = []
        state.baseline_clients = {}

    def _check_baseline(self, raw: Any) -> Summary:
        count, means, stds, effects = _ENCODED_SUMMARY.validate_python(raw)
        config = self.config
        if count != config.baseline_size:
            raise ValueError(f"count {count} is not baseline_size {config.baseline_size}")
        for i, name in enumerate(STATISTICS):
            if not 0.0 <= means[i] <= _LARGEST[i] or not config.min_std <= stds[i] <= _LARGEST[i]:
                raise ValueError(
                    f"{name}: mean {means[i]} and std {stds[i]} must lie in [0, {_LARGEST[i]}] "
                    f"(std at least min_std {config.min_std})"
                )
            if not 1.0 <= effects[i] <= count:
                raise ValueError(f"{name}: design effect {effects[i]} is not in [1, {count}]")
        return Summary(count, means, stds, effects)

    def _encode_state(self, state: _Version) -> list[Any]:
        return [
            state.last_ts,
            [m.encode() for m in state.moments],
            None if state.reference is None else state.reference.encode(),
            state.baseline_clients,
            state.cusum_k,
            state.cusum_h,
            state.block,
            state.block_clients,
            list(state.blocks),
            list(state.client_blocks),
            state.seen,
            state.upper,
            state.lower,
            None if state.incident is None else state.incident.encode(),
            list(state.recent_ids),
        ]

    def _decode_state(self, raw: list[Any]) -> _Version:
        (
            last_ts,
            moments,
            reference,
            baseline_clients,
            cusum_k,
            cusum_h,
            block,
            block_clients,
            blocks,
            client_blocks,
            seen,
            upper,
            lower,
            incident,
            ids,
        ) = raw
        return _Version(
            last_ts=float(last_ts),
            blocks=deque((list(b) for b in blocks), maxlen=self.config.blocks),
            client_blocks=deque((_sums(b) for b in client_blocks), maxlen=self.config.blocks),
            moments=[RunningMoments.decode(m) for m in moments],
            reference=None if reference is None else Summary.decode(reference),
            baseline_clients=_sums(baseline_clients),
            cusum_k=[float(k) for k in cusum_k],
            cusum_h=[float(h) for h in cusum_h],
            block=list(block),
            block_clients=_sums(block_clients),
            seen=int(seen),
            upper=list(upper),
            lower=list(lower),
            incident=Incident.decode(incident),
            recent_ids=deque(ids, maxlen=SAMPLE_IDS),
        )

    def _encode_baseline(self, baseline: Summary) -> Any:
        return baseline.encode()

    def _decode_baseline(self, raw: Any) -> Summary:
        return Summary.decode(raw)


def _sums(raw: Any) -> ClientSums:
    return {str(client): [float(v) for v in row] for client, row in raw.items()}
