"""Population stability index of one numeric feature against its reference's quantile bins.

PSI = sum over bins of (a - e) * ln(a / e), with e the reference's share of a bin and a the
current sample's. Bins are cut at the reference's quantiles so that each holds about the same
share of it: every bin then carries evidence, whatever the feature's scale or skew, and the
usual reading applies (< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift). PSI is an
effect size for people and dashboards, not a test: the detectors decide with a two-sample
test and report PSI next to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFAULT_BINS = 10
SHARE_FLOOR = 1e-4
"""Floor on a bin's share: an empty bin would make ln(a / e) infinite."""


def quantile_edges(reference: Sequence[float] | FloatArray, bins: int = DEFAULT_BINS) -> FloatArray:
    """Interior cut points at the reference's 1/bins ... (bins-1)/bins quantiles.

    Repeated cut points (a discrete or constant feature) are merged, so such a feature gets
    fewer, non-empty bins instead of empty ones.
    """
    if bins < 2:
        raise ValueError("PSI needs at least two bins")
    values = np.asarray(reference, dtype=np.float64)
    if values.size == 0:
        raise ValueError("the reference is empty")
    cuts = np.quantile(values, np.arange(1, bins) / bins)
    return np.unique(cuts)


def bin_shares(values: Sequence[float] | FloatArray, edges: FloatArray) -> FloatArray:
    """Share of `values` in each bin (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bin")
    counts = np.bincount(np.searchsorted(edges, data, side="left"), minlength=edges.size + 1)
    return counts.astype(np.float64) / data.size


def psi(
    expected: Sequence[float] | FloatArray,
    actual: Sequence[float] | FloatArray,
    floor: float = SHARE_FLOOR,
) -> float:
    """PSI of bin shares `actual` against `expected` (each floored at `floor`, not renormalised)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if e.shape != a.shape:
        raise ValueError(f"{e.size} expected bins but {a.size} actual ones")
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(
    reference: Sequence[float] | FloatArray,
    current: Sequence[float] | FloatArray,
    bins: int = DEFAULT_BINS,
) -> float:
    """PSI of `current` against `reference`, binned at the reference's quantiles."""
    edges = quantile_edges(reference, bins)
    return psi(bin_shares(reference, edges), bin_shares(current, edges))
