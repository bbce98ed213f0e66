"""Online building blocks shared by the behaviour detectors (boundary probing, class coverage,
evasion campaign, off-manifold queries): the low-margin test, a running rate, a binomial tail
bound, incidents, the per-client Wald test, an idle table.

They are here rather than in each detector so the detectors agree on what "near the decision
boundary" means, on how a population rate is learned, and on when an incident opens and
closes. The arithmetic is pure Python (the package does not depend on numpy/scipy) and every
piece of state is plain floats and ints, so `state_dict` stays JSON-able and restores
bit-exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.detectors.base import incident_fingerprint, new_alert
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

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


class Flagged(Protocol):
    """Whatever carries an incident: a client, a model, a pooled test."""

    incident: list[Any] | None  # [fingerprint, opened_at, last_finding_ts]


def flag(holder: Flagged, now: float, new_fingerprint: Callable[[], str]) -> bool:
    """Record a finding at `now`: open an incident (True: raise its alert) or extend the open
    one (False: it has had its alert)."""
    if holder.incident is None:
        holder.incident = [new_fingerprint(), now, now]
        return True
    holder.incident[2] = max(holder.incident[2], now)
    return False


def close_if_quiet(holder: Flagged, now: float, quiet_seconds: float) -> None:
    """Close the open incident if its last finding is at least `quiet_seconds` before `now`."""
    incident = holder.incident
    if incident is not None and now - incident[2] >= quiet_seconds:
        holder.incident = None


class IncidentConfig(BaseModel):
    """When a per-client incident closes, when a client's state is forgotten, how loud."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quiet_seconds: float = Field(default=600.0, gt=0)
    idle_seconds: float = Field(default=1_800.0, gt=0)
    severity: Severity = Severity.WARNING

    @model_validator(mode="after")
    def _idle_after_quiet(self) -> Self:
        if self.idle_seconds < self.quiet_seconds:
            raise ValueError("idle_seconds must be >= quiet_seconds")
        return self


class SprtConfig(IncidentConfig):
    """A per-client Wald test of H0: rate <= null_ratio x p0 against H1: rate >= alt_ratio x p0.

    Subclasses declare `null_ratio` and `alt_ratio` with their own defaults (what p0 is, and
    so how wide the indifference zone must be, is the detector's business).
    """

    null_ratio: float
    alt_ratio: float
    alpha: float = Field(default=1e-6, gt=0, lt=0.5, description="False alarms per test.")
    beta: float = Field(default=0.01, gt=0, lt=0.5, description="Misses per test at H1.")

    @model_validator(mode="after")
    def _indifference_zone(self) -> Self:
        if self.alt_ratio <= self.null_ratio:
            raise ValueError("alt_ratio must exceed null_ratio (the indifference zone)")
        return self

    def hypotheses(self, p0: float) -> tuple[float, float, float]:
        """(p0, H0 rate, H1 rate) for a population rate p0."""
        return p0, widened_rate(p0, self.null_ratio), widened_rate(p0, self.alt_ratio)


@dataclass(slots=True)
class WaldTest:
    """One running Wald test: its log-likelihood ratio, its observations and hits, when it
    started, and the incident of whoever it tests."""

    llr: float = 0.0
    queries: int = 0
    hits: int = 0
    test_start: float = 0.0
    incident: list[Any] | None = None  # [fingerprint, opened_at, last_alarm_ts]

    def observe(self, hit: bool, h0: float, h1: float) -> None:
        """One Bernoulli observation between H0 rate `h0` and H1 rate `h1`."""
        self.llr += math.log(h1 / h0) if hit else math.log((1.0 - h1) / (1.0 - h0))
        self.queries += 1
        self.hits += hit

    def restart(self, now: float) -> None:
        self.llr, self.queries, self.hits, self.test_start = 0.0, 0, 0, now


class ClientSprt:
    """Wald's boundaries for one detector's per-client tests, with one alert per incident."""

    __slots__ = ("config", "detector", "log_a", "log_b")

    def __init__(self, detector: str, config: SprtConfig) -> None:
        self.detector, self.config = detector, config
        self.log_a, self.log_b = wald_bounds(config.alpha, config.beta)

    def step(
        self, test: WaldTest, record: TelemetryRecord, make_alert: Callable[[], Alert]
    ) -> Alert | None:
        """Apply the boundaries to `test` after its observation of `record`.

        At or below log B the client looks ordinary: its test starts anew, and an incident
        quiet for `quiet_seconds` closes. At or above log A the client is flagged: the first
        rejection opens an incident and makes its alert (after the incident is set and before
        the test restarts, so the alert carries the incident's fingerprint and describes the
        test that rejected H0); later rejections only extend the incident.
        """
        now = record.timestamp
        if test.llr <= self.log_b:
            close_if_quiet(test, now, self.config.quiet_seconds)
            test.restart(now)
            return None
        if test.llr < self.log_a:
            return None
        opened = flag(
            test,
            now,
            lambda: incident_fingerprint(
                self.detector, record.model_id, record.client_id, record.event_id
            ),
        )
        alert = make_alert() if opened else None
        test.restart(now)
        return alert

    def alert(
        self,
        test: WaldTest,
        record: TelemetryRecord,
        *,
        kind: AlertKind,
        summary: str,
        rates: tuple[float, float],
        details: dict[str, Any],
        samples: Iterable[str],
        labels: dict[str, str],
        client_id: str | None = None,
        severity: Severity | None = None,
    ) -> Alert:
        """The alert of the incident `test` just opened at `record`. Its evidence is the test's
        statistic and error rates, then the detector's `details`, then the hypotheses (H0
        and H1 `rates`), the test's span and the sample events. It names `client_id` (a
        pooled test's most active member; by default the record's client) at `severity` (by
        default the configured one)."""
        assert test.incident is not None
        cfg = self.config
        return new_alert(
            detector=self.detector,
            kind=kind,
            severity=severity or cfg.severity,
            fingerprint=test.incident[0],
            record=record,
            client_id=client_id or record.client_id,
            score=round(test.llr, 6),
            threshold=round(self.log_a, 6),
            summary=summary,
            evidence={
                "statistic": "sprt_log_likelihood_ratio",
                "value": round(test.llr, 6),
                "threshold": round(self.log_a, 6),
                "accept_below": round(self.log_b, 6),
                "alpha": cfg.alpha,
                "beta": cfg.beta,
                **details,
                "null_rate": round(rates[0], 6),
                "alternative_rate": round(rates[1], 6),
                "window_seconds": round(record.timestamp - test.test_start, 3),
                "opening_event_id": record.event_id,
                "sample_event_ids": list(samples),
            },
            labels=labels,
        )


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

    @property
    def saved_watermark(self) -> float | None:
        """The watermark as state keeps it: None before the first observation."""
        return self.watermark if math.isfinite(self.watermark) else None

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
