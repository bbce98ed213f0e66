"""Two-sample Kolmogorov-Smirnov test, in closed form (no scipy on the hot path).

`feature_drift` confirms a river trigger by testing a feature's recent window against the
version's reference: the reference is a sample too, so a two-sample test is the honest one.
The p-value is the asymptotic Kolmogorov distribution with Stephens' small-sample correction
(Stephens 1970; Numerical Recipes 14.3): within ~10% of scipy's exact p-value for windows of a
few hundred, which is plenty for a test run at a fixed level. Ties (discrete features) make
the test conservative, never trigger-happy.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_TERMS = 100


def ks_statistic(reference_sorted: FloatArray, sample: FloatArray) -> float:
    """sup |F_ref - F_sample| over all observed values (`reference_sorted` must be sorted)."""
    sample_sorted = np.sort(sample)
    points = np.concatenate((reference_sorted, sample_sorted))
    f_ref = np.searchsorted(reference_sorted, points, side="right") / reference_sorted.size
    f_sample = np.searchsorted(sample_sorted, points, side="right") / sample_sorted.size
    return float(np.max(np.abs(f_ref - f_sample)))


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution: 2 sum (-1)^(k-1) exp(-2 k^2 lam^2)."""
    if lam < 0.2:  # the series converges slowly here, and P > 0.99999
        return 1.0
    total = 0.0
    for k in range(1, _TERMS + 1):
        term = math.exp(-2.0 * k * k * lam * lam)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def _lambda(statistic: float, n: int, m: int) -> float:
    root = math.sqrt(n * m / (n + m))
    return (root + 0.12 + 0.11 / root) * statistic


def ks_p_value(statistic: float, n: int, m: int) -> float:
    """Asymptotic p-value of a two-sample KS statistic for sample sizes n and m."""
    return kolmogorov_sf(_lambda(statistic, n, m))


def ks_critical(alpha: float, n: int, m: int) -> float:
    """The statistic whose p-value is `alpha` (bisection; the p-value falls as D grows)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if ks_p_value(mid, n, m) > alpha:
            low = mid
        else:
            high = mid
    return high
