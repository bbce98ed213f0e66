"""Per-feature change triggers: one river drift detector per feature, with JSON state.

`feature_drift` feeds each feature's value stream (standardised by the version's reference)
to a river detector. A detector firing is only a *trigger*: the feature is then tested against
the reference before anything is alerted, so the trigger's job is to be cheap and to fire
soon after a change, and its false-alarm rate only decides how often that test runs.

ADWIN is the default: it is scale-free (its cut test uses the window's own variance), adapts
its window so both sudden and slow changes of the mean show up, holds O(log n) memory, runs in
Rust (~1 us per update), and its `delta` is a false-positive bound we can split over features
(Bonferroni: delta / n_features each). On 200,000 N(0, 1) values it fired 0 times at
0.002 / 64 and caught a 1-std shift within 40-70 values. Page-Hinkley (CUSUM on the running
mean) is as fast to react but its threshold is in the data's units: here, reference stds.
KSWIN runs a scipy KS test per feature per event (~0.5 ms): offered, not advised.

river's detectors do not serialise to JSON, so this module stores what rebuilds them exactly:
ADWIN's Rust window through its own pickle state (bincode bytes, base64), Page-Hinkley's
sums, KSWIN's window and RNG state. `tests/unit/test_feature_drift.py` checks that a bank
saved and restored mid-stream fires exactly where an uninterrupted river detector fires.
"""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from river import drift, stats
from river.base import DriftDetector

TriggerMethod = Literal["adwin", "page_hinkley", "kswin"]


class DriftTriggerConfig(BaseModel):
    """Which river detector watches each feature, and its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: TriggerMethod = "adwin"
    delta: float = Field(
        default=0.002, gt=0, lt=1, description="ADWIN delta for all features; each gets delta/n."
    )
    adwin_clock: int = Field(default=32, ge=1, description="ADWIN checks for a cut every N values.")
    ph_delta: float = Field(
        default=0.25, ge=0, description="Page-Hinkley tolerated drift (reference stds)."
    )
    ph_threshold: float = Field(
        default=50.0, gt=0, description="Page-Hinkley lambda (reference stds)."
    )
    ph_min_instances: int = Field(default=30, ge=1)
    kswin_alpha: float = Field(
        default=0.005, gt=0, lt=1, description="KSWIN level for all features; each gets alpha/n."
    )
    kswin_window: int = Field(default=100, ge=2)
    kswin_stat_size: int = Field(default=30, ge=1)
    seed: int = Field(default=0, description="Seeds KSWIN's sampling (and anything random).")

    @model_validator(mode="after")
    def _kswin_sizes(self) -> Self:
        if self.kswin_stat_size >= self.kswin_window:
            raise ValueError("kswin_stat_size must be smaller than kswin_window")
        return self


def new_trigger(config: DriftTriggerConfig, n_features: int, seed: int) -> DriftDetector:
    """One feature's river detector, its false-alarm level split over `n_features`."""
    if config.method == "adwin":
        return drift.ADWIN(delta=config.delta / n_features, clock=config.adwin_clock)  # type: ignore[no-untyped-call]
    if config.method == "page_hinkley":
        return drift.PageHinkley(
            min_instances=config.ph_min_instances,
            delta=config.ph_delta,
            threshold=config.ph_threshold,
        )
    return drift.KSWIN(
        alpha=config.kswin_alpha / n_features,
        window_size=config.kswin_window,
        stat_size=config.kswin_stat_size,
        seed=seed,
    )


def _dump_adwin(detector: Any) -> list[Any]:
    window = base64.b64encode(detector._helper.__getstate__()).decode("ascii")
    return [window, bool(detector._drift_detected)]


def _load_adwin(detector: Any, raw: list[Any]) -> None:
    detector._helper.__setstate__(base64.b64decode(raw[0]))
    detector._drift_detected = bool(raw[1])


def _dump_page_hinkley(detector: Any) -> list[Any]:
    low = float(detector._min_increase)
    return [
        float(detector._x_mean.n),
        float(detector._x_mean.get()),
        float(detector._sum_increase),
        float(detector._sum_decrease),
        None if math.isinf(low) else low,  # +inf until the first value: not JSON
        float(detector._max_decrease),
        bool(detector._drift_detected),
    ]


def _load_page_hinkley(detector: Any, raw: list[Any]) -> None:
    n, mean, up, down, low, high, detected = raw
    detector._x_mean = stats.Mean._from_state(n, mean)
    detector._sum_increase, detector._sum_decrease = up, down
    detector._min_increase = math.inf if low is None else low
    detector._max_decrease = high
    detector._drift_detected = detected


def _dump_kswin(detector: Any) -> list[Any]:
    version, internal, gauss = detector._rng.getstate()
    return [
        [float(x) for x in detector.window],
        int(detector.n),
        float(detector.p_value),
        bool(detector._drift_detected),
        [version, list(internal), gauss],
    ]


def _load_kswin(detector: Any, raw: list[Any]) -> None:
    window, n, p_value, detected, (version, internal, gauss) = raw
    detector.window = deque(window, maxlen=detector.window_size)
    detector.n, detector.p_value, detector._drift_detected = n, p_value, detected
    detector._rng.setstate((version, tuple(internal), gauss))


_CODECS: dict[str, tuple[Callable[[Any], list[Any]], Callable[[Any, list[Any]], None]]] = {
    "adwin": (_dump_adwin, _load_adwin),
    "page_hinkley": (_dump_page_hinkley, _load_page_hinkley),
    "kswin": (_dump_kswin, _load_kswin),
}


class TriggerBank:
    """One river detector per feature of one model version."""

    def __init__(self, config: DriftTriggerConfig, n_features: int, seed: int) -> None:
        self.method = config.method
        self._detectors = [new_trigger(config, n_features, seed + j) for j in range(n_features)]

    def update(self, values: Sequence[float]) -> list[int]:
        """Feed one value per feature; the features whose detector fired."""
        fired: list[int] = []
        for j, (detector, value) in enumerate(zip(self._detectors, values, strict=True)):
            detector.update(value)
            if detector.drift_detected:
                fired.append(j)
        return fired

    def state_dict(self) -> list[Any]:
        dump = _CODECS[self.method][0]
        return [dump(detector) for detector in self._detectors]

    def load_state_dict(self, raw: list[Any]) -> None:
        if len(raw) != len(self._detectors):
            raise ValueError(
                f"trigger state for {len(raw)} features, expected {len(self._detectors)}"
            )
        load = _CODECS[self.method][1]
        for detector, state in zip(self._detectors, raw, strict=True):
            load(detector, state)
