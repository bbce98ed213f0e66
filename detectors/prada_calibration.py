"""PRADA's thresholds from benign clients, for a target false-alarm rate per client.

A client raises a false alarm if any one of its tests falls below δ, so what δ must cover is
the distribution, over benign clients, of each client's *lowest* W — and, for the spread
floor, of each one's lowest std/mean of D. Few samples hold enough clients to read a 0.1 %
quantile off directly, so the tail is fitted: log(1 − W_min) and log(spread_min) are close to
normal over benign clients (both statistics are bounded, the logs are not), and

    δ      = 1 − exp(μ + k σ)   over log(1 − W_min)
    spread = exp(μ − k σ)       over log(spread_min),   k = t_{n−1}(1 − a) · √(1 + 1/n).

k is the normal *prediction* bound (the Student-t quantile widened for a new observation,
e.g. Geisser, "Predictive Inference", 1993): a benign client not among the n fitted falls
beyond it with probability a exactly, the error of estimating μ and σ from n clients
included, so a small sample is not over-trusted. a is the client's whole false-alarm
budget α when only δ is fitted, α/2 each when the floor is too (Bonferroni). Round towards
fewer alarms, 4 decimals.

Attackers may be among the clients fitted (the automatic calibration cannot know): an
extraction client's W_min is 0.6–0.8 where benign ones are 0.9–0.98, five or more σ out on
the log scale. μ and σ are therefore those of the points kept by iterated 3σ clipping,
started from the median and the MAD (a one-step MAD cut lets a 2nd attacker through once
the 1st has inflated σ). The std of what a ±3σ cut keeps is 0.9866 σ for normal data, so it
is divided by that (otherwise the iteration shrinks σ by a few % and δ creeps up). Up to
about a tenth of the sample can be attackers; more pulls δ down (fewer alarms), never up.

Where the minima come from:

- online, `ThresholdLearner`: each (model, version) records the lowest statistics of the
  first `clients` clients to reach a test while it learns, then fits and freezes — as the
  model-version detectors learn their baselines. A version still learning borrows the
  model's most recently frozen thresholds (a rollout changes the labels, not the inputs
  whose distances PRADA measures), so a rollout opens no blind window.
- offline, `prada.calibrate_limits` (`mlwarden calibrate`): every client of a recording over
  its whole life; the result goes in the configuration, where it wins over learning.

With the per-class standardisation of `growing_set.check_distances`, a benign client's W_min
hardly depends on how many tests it has run (the correlation of log(1 − W_min) with log
tests is −0.04 to 0.17 over three simulated benign hours of 100–122 clients each; it was
0.42–0.54 on raw pooled D), so minima of clients seen for part of their lives, as the online
learner sees them, stand for whole lives.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from scipy.stats import norm  # type: ignore[import-untyped]
from scipy.stats import t as student_t

from mlwarden.detectors.baseline import ModelKey
from mlwarden.schemas.errors import ConfigError

CLIP_SIGMAS: Final = 3.0
_CLIP_ROUNDS: Final = 20
_MAD_TO_SIGMA: Final = 1.4826
_KEPT_SD: Final = math.sqrt(
    1.0 - 2.0 * CLIP_SIGMAS * norm.pdf(CLIP_SIGMAS) / (2.0 * norm.cdf(CLIP_SIGMAS) - 1.0)
)
"""std of N(0, 1) cut to ±3σ: the clipped sample's std is divided by it."""
_KEEP_VERSIONS: Final = 4
"""Frozen versions kept per model: the latest ones (older ones no longer serve)."""


def robust_moments(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, σ and count of the values kept by iterated 3σ clipping.

    The first cut is at 3 MAD-σ from the median; then it is redrawn at 3σ from the mean of
    what was kept, σ being the kept std (ddof 1) over `_KEPT_SD`, until it keeps the same
    values. With no spread (more than half the values equal) the sample is kept whole.
    """
    data = np.asarray(list(values), dtype=np.float64)
    if data.size < 2:
        raise ConfigError("a tail fit needs the minima of at least two benign clients")
    center = float(np.median(data))
    scale = _MAD_TO_SIGMA * float(np.median(np.abs(data - center)))
    kept = np.ones(data.size, dtype=bool)
    for _ in range(_CLIP_ROUNDS):
        if scale <= 0.0:
            break
        cut = np.abs(data - center) <= CLIP_SIGMAS * scale
        if int(cut.sum()) < 2:
            break
        settled = bool(np.array_equal(cut, kept))
        kept = cut
        center, scale = float(data[kept].mean()), float(data[kept].std(ddof=1)) / _KEPT_SD
        if settled:
            break
    sample = data[kept]
    return float(sample.mean()), float(sample.std(ddof=1)) / _KEPT_SD, int(sample.size)


def prediction_factor(alpha: float, n: int) -> float:
    """k with P(new > μ̂ + k σ̂) = α for n normal observations: t_{n−1}(1 − α) √(1 + 1/n)."""
    return float(student_t.ppf(1.0 - alpha, n - 1)) * math.sqrt(1.0 + 1.0 / n)


def tail_threshold(minima: Iterable[float], alpha: float, *, upper: bool) -> float:
    """The value a share `alpha` of benign clients' minima falls beyond (log-normal fit).

    `upper=True` is for W (bounded by 1: the fit is on log(1 − W), the threshold is δ);
    False for the spread (the fit is on log(spread), the threshold is the floor).
    """
    values = np.asarray(list(minima), dtype=np.float64)
    if upper:
        values = 1.0 - values
    mu, sigma, n = robust_moments(np.log(np.clip(values, 1e-12, None)))
    reach = prediction_factor(alpha, n) * sigma
    if upper:
        return math.floor((1.0 - math.exp(mu + reach)) * 1e4) / 1e4
    return math.floor(math.exp(mu - reach) * 1e4) / 1e4


def fit_thresholds(
    lowest_w: Iterable[float], lowest_spread: Iterable[float] | None, false_alarm_rate: float
) -> tuple[float | None, float | None]:
    """(δ, spread floor) for a per-client false-alarm rate, split over the tests fitted.

    Without spread minima only δ is fitted, and gets the whole rate. None where fewer than
    two clients had the statistic; δ is at least 1e-4 (W > 0 always).
    """
    w = list(lowest_w)
    spread = None if lowest_spread is None else list(lowest_spread)
    alpha = false_alarm_rate if spread is None else false_alarm_rate / 2.0
    delta = max(tail_threshold(w, alpha, upper=True), 1e-4) if len(w) >= 2 else None
    floor = None
    if spread is not None and len(spread) >= 2:
        floor = max(tail_threshold(spread, alpha, upper=False), 0.0)
    return delta, floor


@dataclass(frozen=True, slots=True)
class Learned:
    """The thresholds one model version learned, and from how many clients."""

    version: str
    delta: float | None
    min_relative_spread: float | None
    clients: int

    def encode(self) -> list[Any]:
        return [self.version, self.delta, self.min_relative_spread, self.clients]

    @classmethod
    def decode(cls, raw: list[Any]) -> Learned:
        return cls(str(raw[0]), raw[1], raw[2], int(raw[3]))


@dataclass(slots=True)
class _Learning:
    last_ts: float
    lowest: dict[str, list[float | None]]  # client → [lowest W, lowest spread]


class ThresholdLearner:
    """Per (model, version): the first `clients` clients' lowest statistics, then thresholds.

    δ always; the spread floor only with `learn_spread` (then each gets half the rate).

    Call `observe` for every test in event order (the freeze point is then the same however
    the stream was batched), `limits` for the thresholds in force, `expire` after a batch.
    A learning version that sees no test for `idle_seconds` of watermark starts over (the
    check is made lazily at its next test, and by the sweep, against the same watermark).
    Memory: at most `clients` entries per learning version, and per model the latest
    frozen versions (a few numbers each).
    """

    def __init__(
        self,
        clients: int,
        false_alarm_rate: float,
        idle_seconds: float,
        *,
        learn_spread: bool = False,
    ) -> None:
        if clients < 2:
            raise ValueError("the thresholds need the minima of at least two clients")
        self.clients = clients
        self.false_alarm_rate = false_alarm_rate
        self.idle_seconds = idle_seconds
        self.learn_spread = learn_spread
        self._learning: dict[ModelKey, _Learning] = {}
        self._frozen: dict[str, OrderedDict[str, Learned]] = {}  # model → version, oldest first

    def observe(
        self,
        key: ModelKey,
        client_id: str,
        w: float | None,
        spread: float | None,
        *,
        ts: float,
        watermark: float,
    ) -> Learned | None:
        """Record one test of `client_id`; the thresholds if this test froze the version."""
        model_id, version = key
        if version in self._frozen.get(model_id, ()):
            return None
        entry = self._learning.get(key)
        if entry is None or watermark - entry.last_ts > self.idle_seconds:
            entry = self._learning[key] = _Learning(ts, {})
        entry.last_ts = max(entry.last_ts, ts)
        lowest = entry.lowest.setdefault(client_id, [None, None])
        for slot, value in enumerate((w, spread)):
            if value is not None:
                old = lowest[slot]
                lowest[slot] = value if old is None else min(old, value)
        if len(entry.lowest) < self.clients:
            return None
        del self._learning[key]
        spreads = [s for _, s in entry.lowest.values() if s is not None]
        delta, floor = fit_thresholds(
            (w for w, _ in entry.lowest.values() if w is not None),
            spreads if self.learn_spread else None,
            self.false_alarm_rate,
        )
        learned = Learned(version, delta, floor, len(entry.lowest))
        self._freeze(model_id, learned)
        return learned

    def _freeze(self, model_id: str, learned: Learned) -> None:
        versions = self._frozen.setdefault(model_id, OrderedDict())
        versions.pop(learned.version, None)
        versions[learned.version] = learned
        while len(versions) > _KEEP_VERSIONS:
            versions.popitem(last=False)

    def limits(self, key: ModelKey) -> Learned | None:
        """The version's own thresholds, else the model's latest frozen ones, else None."""
        model_id, version = key
        versions = self._frozen.get(model_id)
        if not versions:
            return None
        own = versions.get(version)
        return own if own is not None else next(reversed(versions.values()))

    def learning_clients(self, key: ModelKey) -> int:
        """Clients recorded so far by a version still learning (0 if none or frozen)."""
        entry = self._learning.get(key)
        return 0 if entry is None else len(entry.lowest)

    def expire(self, watermark: float) -> None:
        """Forget learning versions idle for `idle_seconds` (their next test would restart)."""
        for key in [
            k for k, e in self._learning.items() if watermark - e.last_ts > self.idle_seconds
        ]:
            del self._learning[key]

    def state_dict(self) -> dict[str, Any]:
        return {
            "learning": [
                [model_id, version, entry.last_ts, [[c, *v] for c, v in entry.lowest.items()]]
                for (model_id, version), entry in self._learning.items()
            ],
            "frozen": [
                [model_id, [learned.encode() for learned in versions.values()]]
                for model_id, versions in self._frozen.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._learning = {
            (model_id, version): _Learning(float(last_ts), {c: [w, s] for c, w, s in lowest})
            for model_id, version, last_ts, lowest in state["learning"]
        }
        self._frozen = {
            model_id: OrderedDict((raw[0], Learned.decode(raw)) for raw in versions)
            for model_id, versions in state["frozen"]
        }
