"""Prediction drift: the mix of predicted classes moved away from the version's baseline.

A fraud model that suddenly calls 25% of traffic fraud instead of 10% is either facing new
traffic (an attack, a broken upstream feature) or broken itself; either way someone should
look. Per (model_id, model_version), the first `baseline_size` predictions are the reference;
every `evaluate_every` events the latest `window_size` predictions are tested against it with a
chi-square homogeneity test (`drift_stats.chi_square_homogeneity`: rare and unseen classes
pooled), at the level alpha = evaluate_every / expected_run_length_events. Traffic comes in
client sessions with per-client favourite classes, so the class mix of a window (and of the
baseline) is a cluster sample, far more variable than a multinomial one: the statistic is
divided by its Rao-Scott design effect, estimated from both samples' per-client counts
(`drift_stats.rao_scott`), so alpha is again the per-test false-alarm rate. One test per
evaluation, so no multiple-testing correction; overlapping windows make the realised run
length between incidents longer than configured (see `drift_stats`). PSI is reported as an
effect size a human can compare across models.

Only `prediction` and `client_id` are needed. Per-client counts are kept for the baseline and
per evaluation block: state stays bounded by `baseline_size + window_size` entries.

When a new version freezes its baseline, it is compared with the previous version's by the
same (Rao-Scott corrected) test at the same alpha: a rollout that changed the class mix
(and by at least `rollout_min_psi`) is reported once as a critical regression.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, Strict, TypeAdapter

from mlwarden.detectors.base import new_alert
from mlwarden.detectors.columns import predicted_label
from mlwarden.detectors.drift_stats import (
    ChiSquare,
    chi_square_homogeneity,
    chi_square_limit,
    psi,
    rao_scott,
    sig,
)
from mlwarden.detectors.rollout_checks import Regression, class_mix_regression, class_shares
from mlwarden.detectors.versioned_drift import (
    SAMPLE_IDS,
    Incident,
    VersionedDriftDetector,
    WindowedDriftConfig,
)
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord

UNSEEN = "<unseen>"
"""Where labels outside a version's baseline (or beyond `max_classes`) are counted."""


Counts = dict[str, int]
ClientCounts = dict[str, Counts]


@dataclass(slots=True)
class Baseline:
    """A frozen baseline: its class counts and, per client, that client's class counts."""

    counts: Counts
    clients: ClientCounts

    def encode(self) -> list[Any]:
        return [self.counts, self.clients]

    @classmethod
    def decode(cls, raw: Any) -> Baseline:
        if isinstance(raw, dict):  # state written before per-client counts were kept
            return cls(dict(raw), {})
        return cls(dict(raw[0]), {str(c): dict(v) for c, v in raw[1].items()})


_Count = Annotated[int, Strict(), Field(gt=0)]
_ENCODED_BASELINE: TypeAdapter[tuple[Counts, ClientCounts]] = TypeAdapter(
    tuple[dict[str, _Count], dict[str, dict[str, _Count]]]
)
"""What `Baseline.encode` writes, as a baseline file must hold it."""


class PredictionDriftConfig(WindowedDriftConfig):
    """Windowed drift settings plus the chi-square's pooling rule and the class cap."""

    min_expected_count: float = Field(
        default=5.0, gt=0, description="Classes expected fewer times than this are pooled."
    )
    max_classes: int = Field(
        default=256, ge=2, description="Distinct labels a baseline keeps; the rest are pooled."
    )
    rollout_min_psi: float = Field(
        default=0.05, ge=0, description="Smallest class-mix change (PSI) a rollout reports."
    )


@dataclass(slots=True)
class _Version:
    last_ts: float
    blocks: deque[Counts]
    client_blocks: deque[ClientCounts]
    baseline: Counts = field(default_factory=dict)
    baseline_clients: ClientCounts = field(default_factory=dict)
    learned: int = 0
    block: Counts = field(default_factory=dict)
    block_clients: ClientCounts = field(default_factory=dict)
    window: Counts = field(default_factory=dict)  # sum of `blocks`
    seen: int = 0  # events since the baseline froze
    incident: Incident | None = None
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLE_IDS))


def _count(clients: ClientCounts, client: str, label: str) -> None:
    counts = clients.setdefault(client, {})
    counts[label] = counts.get(label, 0) + 1


def _merge(blocks: deque[ClientCounts]) -> ClientCounts:
    merged: ClientCounts = {}
    for block in blocks:
        for client, counts in block.items():
            _add(merged.setdefault(client, {}), counts, 1)
    return merged


def _add(target: Counts, counts: Mapping[str, int], sign: int) -> None:
    for label, count in counts.items():
        total = target.get(label, 0) + sign * count
        if total:
            target[label] = total
        else:
            del target[label]


class PredictionDriftDetector(VersionedDriftDetector[_Version, Baseline]):
    """Alerts once per incident when a version's predicted-class mix leaves its baseline."""

    name: ClassVar[str] = "prediction_drift"
    kind: ClassVar[AlertKind] = AlertKind.DRIFT
    config_model: ClassVar[type[BaseModel]] = PredictionDriftConfig
    state_version: ClassVar[int] = 2  # 2: per-client counts (Rao-Scott design effects)

    def __init__(self, config: PredictionDriftConfig | None = None) -> None:
        self.config = config or PredictionDriftConfig()
        self.alpha = self.config.alpha()
        super().__init__(self.config)

    def _new_state(self, timestamp: float) -> _Version:
        blocks = self.config.blocks
        return _Version(
            last_ts=timestamp, blocks=deque(maxlen=blocks), client_blocks=deque(maxlen=blocks)
        )

    def _observe(self, record: TelemetryRecord) -> Alert | None:
        config = self.config
        state = self._state_of(record)
        state.recent_ids.append(record.event_id)
        label = predicted_label(record)
        if state.learned < config.baseline_size:
            if label not in state.baseline and len(state.baseline) >= config.max_classes:
                label = UNSEEN
            state.baseline[label] = state.baseline.get(label, 0) + 1
            _count(state.baseline_clients, record.client_id, label)
            state.learned += 1
            if state.learned < config.baseline_size:
                return None
            return self._frozen(record, state, Baseline(state.baseline, state.baseline_clients))
        if label not in state.baseline:
            label = UNSEEN
        state.block[label] = state.block.get(label, 0) + 1
        _count(state.block_clients, record.client_id, label)
        state.seen += 1
        if state.seen % config.evaluate_every:
            return None
        return self._evaluate(record, state)

    def _evaluate(self, record: TelemetryRecord, state: _Version) -> Alert | None:
        if len(state.blocks) == state.blocks.maxlen:
            _add(state.window, state.blocks[0], -1)
        state.blocks.append(state.block)
        state.client_blocks.append(state.block_clients)
        _add(state.window, state.block, 1)
        state.block, state.block_clients = {}, {}
        if len(state.blocks) < self.config.blocks:
            return None
        test = rao_scott(
            chi_square_homogeneity(state.baseline, state.window, self.config.min_expected_count),
            state.baseline_clients,
            _merge(state.client_blocks),
        )
        fingerprint = self._opened_incident(record, state, test.p_value < self.alpha)
        if fingerprint is None:
            return None
        shares = class_shares(state.baseline, state.window, ("baseline_share", "window_share"))
        top = shares[0]
        stability = psi(state.baseline, state.window)
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=self.config.severity,
            fingerprint=fingerprint,
            record=record,
            client_id=None,
            score=sig(test.statistic),
            threshold=sig(chi_square_limit(self.alpha, test.dof)),
            summary=(
                f"predicted classes of {record.model_id} v{record.model_version} moved from "
                f"its baseline: class {top['class']!r} {top['baseline_share']:.1%} -> "
                f"{top['window_share']:.1%} over the last {self.config.window_size} predictions "
                f"(Rao-Scott chi-square {test.statistic:.1f} on {test.dof} dof, design effect "
                f"{test.design_effect:.1f}, p={test.p_value:.2g} "
                f"< {self.alpha:.2g}; PSI {stability:.3f})"
            ),
            evidence={
                "statistic": "predicted_class_distribution",
                **self._test_evidence(test, stability),
                "baseline_size": self.config.baseline_size,
                "window_size": self.config.window_size,
                "classes": shares,
                "sample_event_ids": list(state.recent_ids),
            },
        )

    def _rollout_regression(self, previous: Baseline, new: Baseline) -> Regression | None:
        """The new version's baseline against its predecessor's: same test, same alpha."""
        return class_mix_regression(
            previous.counts,
            new.counts,
            previous_clients=previous.clients,
            new_clients=new.clients,
            alpha=self.alpha,
            min_expected=self.config.min_expected_count,
            min_psi=self.config.rollout_min_psi,
        )

    def baseline_config(self) -> dict[str, Any]:
        return {"baseline_size": self.config.baseline_size, "max_classes": self.config.max_classes}

    def _baseline_of(self, state: _Version) -> Baseline | None:
        if state.learned < self.config.baseline_size:
            return None
        return Baseline(state.baseline, state.baseline_clients)

    def _adopt(self, state: _Version, baseline: Baseline) -> None:
        state.baseline = dict(baseline.counts)
        state.baseline_clients = _clients(baseline.clients)
        state.learned = self.config.baseline_size

    def _for_export(self, baseline: Baseline) -> Baseline:
        """Client ids become zero-padded ordinals in the same sorted order: the design effect
        needs only the per-client counts (summed in sorted order), not who the clients are."""
        order = sorted(baseline.clients)
        width = len(str(max(len(order) - 1, 0)))
        return Baseline(
            baseline.counts,
            {f"{i:0{width}d}": baseline.clients[client] for i, client in enumerate(order)},
        )

    def _check_baseline(self, raw: Any) -> Baseline:
        counts, clients = _ENCODED_BASELINE.validate_python(raw)
        size, labels = sum(counts.values()), len(set(counts) - {UNSEEN})
        if size != self.config.baseline_size:
            raise ValueError(
                f"class counts add up to {size}, not baseline_size {self.config.baseline_size}"
            )
        if labels > self.config.max_classes:
            raise ValueError(f"{labels} classes, more than max_classes {self.config.max_classes}")
        merged: Counts = {}
        for per_client in clients.values():
            _add(merged, per_client, 1)
        if merged != counts:
            raise ValueError("the per-client counts do not add up to the class counts")
        return Baseline(counts, clients)

    def _test_evidence(self, test: ChiSquare, stability: float) -> dict[str, Any]:
        return {
            "test": "chi_square_homogeneity_rao_scott",
            "chi_square": sig(test.statistic),
            "raw_chi_square": sig(test.raw_statistic),
            "design_effect": sig(test.design_effect, 4),
            "dof": test.dof,
            "pooled_cells": test.cells,
            "p_value": sig(test.p_value, 4),
            "alpha": sig(self.alpha, 4),
            "critical_value": sig(chi_square_limit(self.alpha, test.dof)),
            "psi": sig(stability, 4),
        }

    def _encode_state(self, state: _Version) -> list[Any]:
        return [
            state.last_ts,
            state.learned,
            state.baseline,
            state.baseline_clients,
            state.block,
            state.block_clients,
            list(state.blocks),
            list(state.client_blocks),
            state.seen,
            None if state.incident is None else state.incident.encode(),
            list(state.recent_ids),
        ]

    def _decode_state(self, raw: list[Any]) -> _Version:
        (
            last_ts,
            learned,
            baseline,
            baseline_clients,
            block,
            block_clients,
            blocks,
            client_blocks,
            seen,
            incident,
            ids,
        ) = raw
        state = _Version(
            last_ts=float(last_ts),
            blocks=deque((dict(b) for b in blocks), maxlen=self.config.blocks),
            client_blocks=deque((_clients(b) for b in client_blocks), maxlen=self.config.blocks),
            baseline=dict(baseline),
            baseline_clients=_clients(baseline_clients),
            learned=int(learned),
            block=dict(block),
            block_clients=_clients(block_clients),
            seen=int(seen),
            incident=Incident.decode(incident),
            recent_ids=deque(ids, maxlen=SAMPLE_IDS),
        )
        for counts in state.blocks:
            _add(state.window, counts, 1)
        return state

    def _encode_baseline(self, baseline: Baseline) -> Any:
        return baseline.encode()

    def _decode_baseline(self, raw: Any) -> Baseline:
        return Baseline.decode(raw)


def _clients(raw: Any) -> ClientCounts:
    return {str(client): dict(counts) for client, counts in raw.items()}
