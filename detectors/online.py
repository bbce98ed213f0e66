"""Online building blocks shared by the behaviour detectors (boundary probing, class coverage,
evasion campaign): the low-margin test, a running rate, a binomial tail bound, an idle table.

They are here rather than in each detector so the three agree on what "near the decision
boundary" means and on how a population rate is learned. Everything is pure Python (the
package does not depend on numpy/scipy) and every piece of state is plain floats and ints, so
`state_dict` stays JSON-able and restores bit-exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

V = TypeVar("V")


def is_low_margin(probabilities: Sequence[float], threshold: float) -> bool:
    """True when top-1 minus top-2 (normalised) is below `threshold`: the input sits near a
    decision boundary, where boundary attacks (HopSkipJump) and evasion attempts put queries.

    The same margin as `columns.confidence`, found in one pass without sorting or entropy:
    this runs on every event of three detectors.
    """
    total = first = second = 0.0
    for p in probabilities:
        total += p
        if p > first:
            first, second = p, first
        elif p > second:
            second = p
    if total <= 0.0:
        return threshold > 0.0  # confidence() reports margin 0 for an all-zero vector
    return first / total - second / total < threshold


@dataclass(slots=True)
class RunningRate:
    """A Bernoulli rate learned online: the plain mean of the first `memory` observations,
    then an exponentially weighted mean with weight 1/`memory` (effective window `memory`).

    Event-count weighting (not time) keeps the estimate's variance fixed whatever the traffic,
    and the state is two numbers.
    """

    rate: float = 0.0
    weight: int = 0

    def update(self, hit: bool, memory: int) -> None:
        self.weight = min(self.weight + 1, memory)
        self.rate += ((1.0 if hit else 0.0) - self.rate) / self.weight

    def to_json(self) -> list[float | int]:
        return [self.rate, self.weight]

    @classmethod
    def from_json(cls, raw: Sequence[float]) -> RunningRate:
        return cls(rate=float(raw[0]), weight=int(raw[1]))


def widened_rate(rate: float, ratio: float) -> float:
    """`ratio` x `rate`, capped so the complementary rate shrinks by at most the same ratio.

    Keeps a hypothesis like "six times the population's low-margin rate" a probability below
    one (and above `rate`) however high the population rate is.
    """
    return min(ratio * rate, 1.0 - (1.0 - rate) / ratio)


def bernoulli_kl(q: float, p: float) -> float:
    """KL divergence D(Bern(q) || Bern(p)) in nats, for 0 < p < 1 and 0 <= q <= 1."""
    total = 0.0
    if q > 0.0:
        total += q * math.log(q / p)
    if q < 1.0:
        total += (1.0 - q) * math.log((1.0 - q) / (1.0 - p))
    return total


def binomial_tail_log_bound(successes: int, trials: int, p: float) -> float:
    """-log of the Chernoff-Hoeffding bound on P(X >= successes), X ~ Binomial(trials, p).

    P(X >= k) <= exp(-n * D(k/n || p)) for k/n > p (Hoeffding 1963, Thm. 1). Testing against
    the bound is conservative (the real tail is smaller), needs no special functions, and its
    value in nats reads directly against log(1/alpha). Returns 0 when k/n <= p.
    """
    if trials <= 0:
        return 0.0
    observed = successes / trials
    if observed <= p:
        return 0.0
    return trials * bernoulli_kl(observed, p)


def wald_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's (log A, log B): reject H0 at or above log A, accept it at or below log B, for
    false-alarm rate alpha and miss rate beta per test (Wald 1945)."""
    return math.log((1.0 - beta) / alpha), math.log(beta / (1.0 - alpha))


class SprtClient(Protocol):
    """A client under a Wald test: its log-likelihood ratio and its open incident, if any."""

    llr: float
    incident: list[Any] | None  # [fingerprint, opened_at, last_alarm_ts]

    def restart(self, now: float) -> None: ...


def wald_step(
    client: SprtClient,
    now: float,
    log_a: float,
    log_b: float,
    quiet_seconds: float,
    new_fingerprint: Callable[[], str],
    make_alert: Callable[[], V],
) -> V | None:
    """Apply Wald's boundaries to `client.llr` after an update, with one alert per incident.

    Below log B the client looks ordinary: its test starts anew, and an incident quiet for
    `quiet_seconds` closes. At or above log A the client is flagged: the first rejection opens
    an incident and makes its alert (after the incident is set and before the test restarts,
    so the alert carries the incident's fingerprint and describes the test that rejected H0);
    later rejections only extend the incident.
    """
    if client.llr <= log_b:
        incident = client.incident
        if incident is not None and now - incident[2] >= quiet_seconds:
            client.incident = None
        client.restart(now)
        return None
    if client.llr < log_a:
        return None
    alert: V | None = None
    if client.incident is None:
        client.incident = [new_fingerprint(), now, now]
        alert = make_alert()
    else:
        client.incident[2] = max(client.incident[2], now)
    client.restart(now)
    return alert


class IdleTable(Generic[V]):
    """Per-key state, oldest use first, dropped once idle for `horizon` seconds of event time.

    Expiry runs on every observation (`touch`), not once per batch, so whether a returning
    key finds its old state never depends on how the stream was cut into batches.
    """

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self.watermark = float("-inf")
        self._items: OrderedDict[tuple[str, str], tuple[float, V]] = OrderedDict()

    def advance(self, now: float, on_drop: Callable[[tuple[str, str], V], None] | None) -> None:
        """Move the event-time watermark to `now` (never back) and drop idle entries."""
        if now > self.watermark:
            self.watermark = now
        cutoff = self.watermark - self.horizon
        items = self._items
        while items:
            key, (last_ts, value) = next(iter(items.items()))
            if last_ts > cutoff:
                break
            del items[key]
            if on_drop is not None:
                on_drop(key, value)

    def get(self, key: tuple[str, str]) -> V | None:
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def put(self, key: tuple[str, str], now: float, value: V) -> None:
        """Store `value` as used at `now` (moves the key to the young end)."""
        previous = self._items.pop(key, None)
        last_ts = now if previous is None else max(previous[0], now)
        self._items[key] = (last_ts, value)

    def items(self) -> Iterator[tuple[tuple[str, str], float, V]]:
        for key, (last_ts, value) in self._items.items():
            yield key, last_ts, value

    def clear(self) -> None:
        self._items.clear()
        self.watermark = float("-inf")

    def restore(self, watermark: float | None, rows: Iterator[tuple[str, str, float, V]]) -> None:
        self.clear()
        self.watermark = float("-inf") if watermark is None else watermark
        for model_id, client_id, last_ts, value in rows:
            self._items[(model_id, client_id)] = (last_ts, value)

    def __len__(self) -> int:
        return len(self._items)
