"""Synthetic feature telemetry for the feature/MMD drift tests: seeded, fast, parametrised.

Each of `shifts`, `shift(t, X)`, may change the feature matrix X in place given each row's
time t (seconds from the stream's start): a sudden step, a ramp, a new correlation. Records
are validated as usual (pydantic-core validates one faster than `model_construct` builds it).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

from mlwarden.schemas.telemetry import TelemetryRecord

# The runner and T0 are shared with the other detectors' tests; imported from here too.
from tests.unit.detector_helpers import T0 as T0
from tests.unit.detector_helpers import dumped as dumped
from tests.unit.detector_helpers import run as run

RATE = 20.0  # events per second per model, the target load

Shift = Callable[[np.ndarray, np.ndarray], None]


def feature_stream(
    events: int,
    *,
    dim: int,
    seed: int,
    start: float = 0.0,
    first_id: int = 0,
    model_id: str = "m",
    version: str = "1",
    shifts: Sequence[Shift] = (),
    names: Sequence[str] | None = None,
) -> list[TelemetryRecord]:
    """`events` records at RATE/s from `start` s after T0, N(0, 1) features, ids e<first_id>..."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((events, dim))
    times = start + np.arange(events) / RATE
    for shift in shifts:
        shift(times, values)
    rows = values.tolist()
    stamps = (T0 + times).tolist()
    if names is not None:
        rows = [dict(zip(names, row, strict=True)) for row in rows]
    collecting = gc.isenabled()
    gc.disable()  # 200,000 acyclic records: the cyclic collector would rescan them for nothing
    try:
        return [
            TelemetryRecord(
                event_id=f"e{first_id + i}",
                timestamp=stamps[i],
                model_id=model_id,
                model_version=version,
                client_id="c",
                prediction=0,
                features=rows[i],
            )
            for i in range(events)
        ]
    finally:
        if collecting:
            gc.enable()


def step(at: float, features: Sequence[int], size: float = 1.0, until: float = np.inf) -> Shift:
    """Add `size` to `features` for times in [at, until)."""

    def apply(times: np.ndarray, values: np.ndarray) -> None:
        rows = (times >= at) & (times < until)
        values[np.ix_(rows, list(features))] += size

    return apply


def ramp(at: float, seconds: float, features: Sequence[int], size: float) -> Shift:
    """Move `features` linearly from +0 at `at` to +`size` after `seconds`, then hold."""

    def apply(times: np.ndarray, values: np.ndarray) -> None:
        progress = np.clip((times - at) / seconds, 0.0, 1.0)
        values[:, list(features)] += size * progress[:, None]

    return apply


def scale(at: float, features: Sequence[int], factor: float) -> Shift:
    """From `at` on, multiply `features` by `factor`: the spread moves, the mean does not."""

    def apply(times: np.ndarray, values: np.ndarray) -> None:
        values[np.ix_(times >= at, list(features))] *= factor

    return apply


def subpopulation(at: float, share: float, features: Sequence[int], size: float) -> Shift:
    """From `at` on, a `share` of events (every k-th) come from a cluster shifted by `size`."""

    def apply(times: np.ndarray, values: np.ndarray) -> None:
        every = round(1 / share)
        rows = (times >= at) & (np.arange(len(times)) % every == 0)
        values[np.ix_(rows, list(features))] += size

    return apply


def correlate(at: float, first: int, second: int, rho: float) -> Shift:
    """From `at` on, make `second` correlate with `first` (rho), keeping both N(0, 1)."""

    def apply(times: np.ndarray, values: np.ndarray) -> None:
        rows = times >= at
        mixed = rho * values[rows, first] + np.sqrt(1.0 - rho * rho) * values[rows, second]
        values[rows, second] = mixed

    return apply


def episodes(dim: int = 16, seed: int = 1) -> list[TelemetryRecord]:
    """22 minutes: features 0-2 shifted by +1 std in minutes 6-11 and 17-22, normal otherwise.

    The default detectors look at 1 event in 10: the reference is learnt in the first ~4
    minutes, so the first shift starts after it.
    """
    return feature_stream(
        int(22 * 60 * RATE),
        dim=dim,
        seed=seed,
        shifts=[step(360.0, [0, 1, 2], until=660.0), step(1020.0, [0, 1, 2])],
    )


@cache
def benign(events: int = 200_000, dim: int = 8) -> list[TelemetryRecord]:
    """A long stream from one fixed distribution (cached: both detectors' tests read it)."""
    return feature_stream(events, dim=dim, seed=99)
