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

Clustered traffic. Real traffic is not i.i.d.: a client sends runs of queries (sessions) with
its own class mix and its own inputs, so a window's class shares and mean confidence vary
between windows far more than a multinomial or a normal with sigma / sqrt(n) says (measured on
the simulator's benign population: the variance of a 1000-event window's class shares is 8-17
times the multinomial one, of its mean entropy 1-3 times). Tests that assume i.i.d. then page
every time a big client starts a session. The fix is the survey statistician's: treat clients
as clusters (primary sampling units) and estimate each sample's variance from its per-client
totals (the linearised variance of a ratio estimator, with-replacement approximation;
Cochran 1977, "Sampling Techniques", 6.11), then

* deflate a chi-square by the mean generalised design effect, X^2 / delta (first-order
  Rao-Scott correction; Rao & Scott 1981, JASA 76:221), delta = sum_j V_jj / pi_j over
  (C - 1) (1/N + 1/M), i.e. the trace of the estimated covariance of the share difference in
  multinomial units;
* standardise a difference of means by the cluster standard errors instead of sigma/sqrt(n).

Design effects are floored at 1: a test is never made more sensitive than its i.i.d. version,
so with one event per client everything reduces to the i.i.d. tests and calibration above.
The level alpha (hence the ARL semantics) is unchanged; what changes is that the statistic it
is compared with now has (approximately) its nominal null distribution under clustering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    columns: tuple[tuple[str, ...], ...] = ()
    """The labels pooled into each column (for a design-effect correction)."""
    design_effect: float = 1.0
    """Rao-Scott mean design effect the statistic was divided by (1: i.i.d.)."""
    raw_statistic: float = 0.0
    """The uncorrected Pearson statistic."""


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
    members: list[list[str]] = []
    rare = (0, 0)
    rare_members: list[str] = []
    for label in labels:
        a, b = reference.get(label, 0), current.get(label, 0)
        if smaller * (a + b) / total >= min_expected:
            columns.append((a, b))
            members.append([label])
        else:
            rare = (rare[0] + a, rare[1] + b)
            rare_members.append(label)
    if sum(rare) > 0:
        if smaller * sum(rare) / total >= min_expected or not columns:
            columns.append(rare)
            members.append(rare_members)
        else:
            smallest = min(range(len(columns)), key=lambda i: sum(columns[i]))
            a, b = columns[smallest]
            columns[smallest] = (a + rare[0], b + rare[1])
            members[smallest].extend(rare_members)
    pooled = tuple(tuple(m) for m in members)
    if len(columns) < 2:
        return ChiSquare(0.0, 0, 1.0, len(columns), pooled)
    statistic = 0.0
    for a, b in columns:
        column_total = a + b
        expected_a = ref_total * column_total / total
        expected_b = cur_total * column_total / total
        statistic += (a - expected_a) ** 2 / expected_a + (b - expected_b) ** 2 / expected_b
    dof = len(columns) - 1
    return ChiSquare(
        statistic, dof, float(chi2.sf(statistic, dof)), len(columns), pooled, 1.0, statistic
    )


ClientCounts = Mapping[str, Mapping[str, int]]
"""Per client (cluster), its count of each label."""


def share_variances(
    clients: ClientCounts, columns: tuple[tuple[str, ...], ...]
) -> tuple[int, list[float]]:
    """(events, variance of each pooled column's share) with clients as clusters.

    Linearised variance of the ratio y / m over clusters, V = n/(n-1) sum_c (y_c - p m_c)^2 / m^2
    (with-replacement approximation). With one event per client it is p(1-p)/(m-1) * m/m, the
    multinomial variance up to n/(n-1). Clients are visited in sorted order: the sum does not
    depend on how the per-client dictionaries were built.
    """
    column_of = {label: j for j, labels in enumerate(columns) for label in labels}
    per_client: list[tuple[int, list[int]]] = []
    totals = [0] * len(columns)
    events = 0
    for client in sorted(clients):
        counts = clients[client]
        y = [0] * len(columns)
        m = 0
        for label, count in counts.items():
            j = column_of.get(label)
            if j is not None:
                y[j] += count
            m += count
        if m:
            per_client.append((m, y))
            events += m
            for j, value in enumerate(y):
                totals[j] += value
    n = len(per_client)
    if events == 0 or n < 2:
        return events, [0.0] * len(columns)
    shares = [t / events for t in totals]
    sums = [0.0] * len(columns)
    for m, y in per_client:
        for j, value in enumerate(y):
            sums[j] += (value - shares[j] * m) ** 2
    scale = n / (n - 1) / (events * events)
    return events, [value * scale for value in sums]


def rao_scott(test: ChiSquare, reference: ClientCounts, current: ClientCounts) -> ChiSquare:
    """`test` deflated by the mean design effect of its two samples' client clustering.

    delta = sum_j (V_ref,j + V_cur,j) / pi_j / ((C - 1)(1/N + 1/M)), floored at 1, with V the
    cluster variances of the pooled columns' shares and pi the pooled shares. The statistic
    X^2 / delta is referred to chi-square on C - 1 dof (Rao & Scott 1981, first order).
    """
    if test.dof == 0:
        return test
    ref_events, ref_var = share_variances(reference, test.columns)
    cur_events, cur_var = share_variances(current, test.columns)
    if ref_events == 0 or cur_events == 0:
        return test
    column_of = {label: j for j, labels in enumerate(test.columns) for label in labels}
    pooled = [0] * len(test.columns)
    for clients in (reference, current):
        for counts in clients.values():
            for label, count in counts.items():
                j = column_of.get(label)
                if j is not None:
                    pooled[j] += count
    total = sum(pooled)
    trace = sum(
        (ref_var[j] + cur_var[j]) / (pooled[j] / total) for j in range(len(pooled)) if pooled[j] > 0
    )
    delta = max(1.0, trace / (test.dof * (1.0 / ref_events + 1.0 / cur_events)))
    statistic = test.raw_statistic / delta
    return ChiSquare(
        statistic,
        test.dof,
        float(chi2.sf(statistic, test.dof)),
        test.cells,
        test.columns,
        delta,
        test.raw_statistic,
    )


def mean_design_effects(
    clients: Mapping[str, Sequence[float]], stds: Sequence[float]
) -> tuple[int, list[float]]:
    """(events, design effect of each mean) from per-client [count, sum_1, sum_2, ...].

    The cluster variance of each mean, n/(n-1) sum_c (s_c - mean m_c)^2 / m^2, over the i.i.d.
    one, std^2 / m; floored at 1. Clients in sorted order (see `share_variances`).
    """
    rows = [clients[c] for c in sorted(clients) if clients[c][0] > 0]
    events = sum(int(row[0]) for row in rows)
    n = len(rows)
    width = len(stds)
    if n < 2 or events == 0:
        return events, [1.0] * width
    means = [sum(row[i + 1] for row in rows) / events for i in range(width)]
    effects = []
    for i in range(width):
        spread = sum((row[i + 1] - means[i] * row[0]) ** 2 for row in rows)
        variance = n / (n - 1) * spread / (events * events)
        iid = stds[i] ** 2 / events
        effects.append(max(1.0, variance / iid) if iid > 0 else 1.0)
    return events, effects


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
    design_effect: tuple[float, ...] = ()
    """Per statistic, the variance of the mean over std^2 / count (client clustering; () = 1)."""

    def effect(self, i: int) -> float:
        return self.design_effect[i] if self.design_effect else 1.0

    def standard_error(self, i: int) -> float:
        """Standard error of mean `i`, clustering included."""
        return self.std[i] * math.sqrt(self.effect(i) / self.count)

    def encode(self) -> list[Any]:
        return [self.count, list(self.mean), list(self.std), list(self.design_effect)]

    @classmethod
    def decode(cls, raw: list[Any]) -> Summary:
        effects = tuple(map(float, raw[3])) if len(raw) > 3 else ()
        return cls(int(raw[0]), tuple(map(float, raw[1])), tuple(map(float, raw[2])), effects)


def sig(value: float, digits: int = 6) -> float:
    """`value` to `digits` significant figures, for evidence a human reads (finite only)."""
    if not math.isfinite(value):
        raise ValueError(f"evidence value {value!r} is not finite")
    return float(f"{value:.{digits}g}")
