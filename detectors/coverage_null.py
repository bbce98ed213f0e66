"""The empirical null of class coverage: how even benign clients' predictions are, per level.

Kept apart from the detector so the statistics can be read (and tested against scipy) alone.
A fixed-bin histogram of t = -log(1 - h) is exact to its bin width, deterministic, JSON-able
as a list of ints, and forgets slowly by halving once it holds `memory` samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

_MIN_DEFICIT = 1e-4  # h = 1 exactly (a perfectly flat histogram) maps to t = 9.21, not inf
_T_MAX = -math.log(_MIN_DEFICIT)
_BINS = 369
_WIDTH = _T_MAX / _BINS
_Z90 = NormalDist().inv_cdf(0.9)


def normalised_entropy(counts: Iterable[int], total: int, classes: int) -> float:
    """Shannon entropy of a histogram divided by log(classes): 0 = one class, 1 = uniform.

    Summed in sorted order so the float result does not depend on dict insertion order (a
    restored state must reproduce the same value bit for bit).
    """
    entropy = 0.0
    for count in sorted(counts):
        if count > 0:
            share = count / total
            entropy -= share * math.log(share)
    return min(1.0, entropy / math.log(classes))


class LevelNull:
    """Benign clients' t = -log(1 - h) at one query count, and the alert threshold it implies."""

    __slots__ = ("_fit", "bins")

    def __init__(self, bins: list[int] | None = None) -> None:
        self.bins = list(bins) if bins is not None else [0] * _BINS
        self._fit: tuple[float, float] | None = None  # cache; a pure function of `bins`

    @staticmethod
    def transform(h: float) -> float:
        """The log evenness deficit: spreads the crowded top end of h (0.9, 0.99, 0.999...)."""
        return -math.log(max(1.0 - h, _MIN_DEFICIT))

    @property
    def total(self) -> int:
        return sum(self.bins)

    def add(self, t: float, memory: int) -> None:
        self.bins[min(int(t / _WIDTH), _BINS - 1)] += 1
        self._fit = None
        if self.total > memory:
            self.bins = [count // 2 for count in self.bins]

    def quantile(self, q: float) -> float:
        """The q-quantile of t, linear within a bin (histogram must be non-empty)."""
        target, cumulative = q * self.total, 0
        for index, count in enumerate(self.bins):
            if count and cumulative + count >= target:
                return (index + (target - cumulative) / count) * _WIDTH
            cumulative += count
        return _T_MAX

    def fit(self, min_spread: float) -> tuple[float, float]:
        """(median, spread): spread = (q90 - q50) / z_0.9, the upper half's normal scale."""
        if self._fit is None:
            median = self.quantile(0.5)
            self._fit = (median, (self.quantile(0.9) - median) / _Z90)
        median, spread = self._fit
        return median, max(spread, min_spread)

    def threshold(self, z: float, min_population: int, min_spread: float) -> float | None:
        """median + z x spread in t, or None while fewer than `min_population` samples."""
        if self.total < min_population:
            return None
        median, spread = self.fit(min_spread)
        return median + z * spread
