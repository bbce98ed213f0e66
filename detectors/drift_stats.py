"""Statistics and false-alarm calibration shared by the drift detectors.

Thresholds are never typed in: each detector is configured with the run length it may go
between false alarms on a benign stream (`expected_run_length_events`) and derives its
thresholds from it here, so "how often may this page me by mistake" is the one knob.

* A test evaluated every K events at level alpha raises, on average, alpha false alarms per K
  events, so alpha = K / ARL. This holds for overlapping windows too (expectation is linear),
  and overlapping windows make consecutive rejections cluster into one incident, so the
  realised time between *incidents* is longer than the ARL: the approximation is conservative.
* Several alarm sources in one detector share the budget: rates add (a union bound), so each of
  `sources` gets alpha = K / (sources * ARL).
* A CUSUM's limit h comes from Siegmund's approximation of its ARL for N(mu, 1) increments
  (Siegmund 1985, "Sequential Analysis", ch. X; Montgomery, "Statistical Quality Control", 9.1.7),
  accurate to a few percent for h >= 2; `tests/unit/test_confidence_shift.py` checks it by
  simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy.stats import chi2, norm  # type: ignore[import-untyped]

_SIEGMUND_CORRECTION = 1.166  # 2 * 0.583: overshoot of a Gaussian random walk over the limit
_GUARD_SE = 2.0  # in-control drift assumed when solving h, in baseline-mean standard errors


def per_test_alpha(evaluate_every: int, run_length_events: float, sources: int = 1) -> float:
    """Level of each test so that `sources` tests every K events page once per ARL events."""
    return min(0.5, evaluate_every / (run_length_events * sources))


def two_sided_z(alpha: float) -> float:
    """|z| limit of a two-sided normal test at level `alpha`."""
    return float(norm.isf(alpha / 2.0))


def siegmund_arl(k: float, h: float, drift: float = 0.0) -> float:
    """Mean steps to alarm of S = max(0, S + x - k) > h with x ~ N(drift, 1)."""
    delta = drift - k
    b = h + _SIEGMUND_CORRECTION
    if abs(delta) < 1e-9:
        return b * b
    exponent = -2.0 * delta * b
    if exponent > 700.0:  # beyond float range: larger than any run length anyone configures
        return math.inf
    return (math.exp(exponent) + 2.0 * delta * b - 1.0) / (2.0 * delta * delta)


def cusum_limit(k: float, run_length: float, drift: float = 0.0) -> float:
    """Smallest h whose Siegmund ARL at `drift` reaches `run_length` (bisection; ARL grows in h)."""
    if k <= drift:
        raise ValueError(
            f"CUSUM reference k={k:.3g} must exceed the in-control drift {drift:.3g}, "
            "or its run length cannot be bounded: tune for a larger shift or a longer baseline"
        )
    low, high = 0.0, 1.0
    while siegmund_arl(k, high, drift) < run_length:
        low, high = high, high * 2.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if siegmund_arl(k, mid, drift) < run_length:
            low = mid
        else:
            high = mid
    return high


def block_cusum(
    *, shift_sigmas: float, block: int, baseline_size: int, run_length_events: float
) -> tuple[float, float, float]:
    """(k, h, guard) of a one-sided CUSUM over standardised means of `block` events.

    Tuned for a per-event mean shift of `shift_sigmas` baseline stds: k is half of it in block
    units. The baseline mean is itself estimated from `baseline_size` events, so a learned
    baseline is off by ~1/sqrt(baseline_size) stds, a bias every block then carries; h is
    solved with that bias at `_GUARD_SE` standard errors (the guard), which keeps the run
    length for ~98% of learned baselines rather than only for an exact one.
    """
    root_block = math.sqrt(block)
    k = shift_sigmas / 2.0 * root_block
    guard = _GUARD_SE * root_block / math.sqrt(baseline_size)
    return k, cusum_limit(k, run_length_events / block, guard), guard


@dataclass(frozen=True, slots=True)
class ChiSquare:
    """A 2 x C homogeneity test after pooling; `cells` counts the pooled columns."""

    statistic: float
    dof: int
    p_value: float
    cells: int


def chi_square_homogeneity(
    reference: Mapping[str, int], current: Mapping[str, int], min_expected: float = 5.0
) -> ChiSquare:
    """Do two samples of class labels come from one distribution?

    A homogeneity test (2 x C contingency table) rather than goodness of fit against the
    reference proportions, because the reference is itself a finite sample: its noise is in
    the test instead of in the false-alarm rate. Classes whose expected count is below
    `min_expected` in either row are pooled into one "rare" column (a class never seen in the
    reference lands there, so an unseen class is tested, not dropped); a rare column still too
    small joins the smallest regular column. Fewer than two columns left: nothing to test.
    """
    labels = sorted(set(reference) | set(current))
    ref_total, cur_total = sum(reference.values()), sum(current.values())
    total = ref_total + cur_total
    if ref_total == 0 or cur_total == 0:
        return ChiSquare(0.0, 0, 1.0, 0)
    smaller = min(ref_total, cur_total)
    columns: list[tuple[int, int]] = []
    rare = (0, 0)
    for label in labels:
        a, b = reference.get(label, 0), current.get(label, 0)
        if smaller * (a + b) / total >= min_expected:
            columns.append((a, b))
        else:
            rare = (rare[0] + a, rare[1] + b)
    if sum(rare) > 0:
        if smaller * sum(rare) / total >= min_expected or not columns:
            columns.append(rare)
        else:
            smallest = min(range(len(columns)), key=lambda i: sum(columns[i]))
            a, b = columns[smallest]
            columns[smallest] = (a + rare[0], b + rare[1])
    if len(columns) < 2:
        return ChiSquare(0.0, 0, 1.0, len(columns))
    statistic = 0.0
    for a, b in columns:
        column_total = a + b
        expected_a = ref_total * column_total / total
        expected_b = cur_total * column_total / total
        statistic += (a - expected_a) ** 2 / expected_a + (b - expected_b) ** 2 / expected_b
    dof = len(columns) - 1
    return ChiSquare(statistic, dof, float(chi2.sf(statistic, dof)), len(columns))


def chi_square_limit(alpha: float, dof: int) -> float:
    """The statistic a test with `dof` degrees of freedom must exceed at level `alpha`."""
    return float(chi2.isf(alpha, dof)) if dof > 0 else math.inf


def psi(
    reference: Mapping[str, int], current: Mapping[str, int], pseudo_count: float = 0.5
) -> float:
    """Population stability index of the class mix, smoothed so an unseen class stays finite."""
    labels = sorted(set(reference) | set(current))
    if not labels:
        return 0.0
    ref_total = sum(reference.values()) + pseudo_count * len(labels)
    cur_total = sum(current.values()) + pseudo_count * len(labels)
    value = 0.0
    for label in labels:
        p = (reference.get(label, 0) + pseudo_count) / ref_total
        q = (current.get(label, 0) + pseudo_count) / cur_total
        value += (q - p) * math.log(q / p)
    return value


class RunningMoments:
    """Count, mean and variance of a stream (Welford: one pass, no catastrophic cancellation)."""

    __slots__ = ("count", "m2", "mean")

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.count, self.mean, self.m2 = count, mean, m2

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 for fewer than two values)."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def encode(self) -> list[Any]:
        return [self.count, self.mean, self.m2]

    @classmethod
    def decode(cls, raw: list[Any]) -> RunningMoments:
        return cls(int(raw[0]), float(raw[1]), float(raw[2]))


@dataclass(frozen=True, slots=True)
class Summary:
    """Count, means and standard deviations of several statistics over one sample."""

    count: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def encode(self) -> list[Any]:
        return [self.count, list(self.mean), list(self.std)]

    @classmethod
    def decode(cls, raw: list[Any]) -> Summary:
        return cls(int(raw[0]), tuple(map(float, raw[1])), tuple(map(float, raw[2])))


def sig(value: float, digits: int = 6) -> float:
    """`value` to `digits` significant figures, for evidence a human reads (finite only)."""
    if not math.isfinite(value):
        raise ValueError(f"evidence value {value!r} is not finite")
    return float(f"{value:.{digits}g}")
