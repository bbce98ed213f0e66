"""PRADA's thresholds from benign traffic, for a target false-alarm rate per client.

The paper picks δ per model by hand from observed W values. Here the same detector code
replays a recording of benign traffic for each model, and the thresholds come from the
distribution of each benign client's *lowest* statistic over its whole life — a client
raises a false alarm if any one of its tests falls below the threshold, so its minimum is
what must be covered.

Few recordings hold enough clients to read a 0.1 % quantile off directly, so the tail is
fitted: log(1 − W_min) and log(spread_min) are close to normal over benign clients (both
statistics are bounded, the logs are not), and the thresholds are

    δ      = 1 − exp(μ + z σ)   over log(1 − W_min)
    spread = exp(μ − z σ)       over log(spread_min),     z = Φ⁻¹(1 − false_alarm_rate).

Round down to 4 decimals. The recording should look like production: clients as long-lived
as the real ones (more tests per client means a lower minimum).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import islice

import numpy as np
from scipy.stats import norm  # type: ignore[import-untyped]

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.growing_set import DistanceCheck
from mlwarden.detectors.prada import PradaConfig, PradaDetector, PradaLimits
from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord


def tail_threshold(minima: Iterable[float], false_alarm_rate: float, *, upper: bool) -> float:
    """The value a fraction `false_alarm_rate` of benign minima falls below (log-normal fit).

    `upper=True` is for W (bounded by 1: the fit is on log(1 − W)); False for the spread.
    """
    values = np.asarray(list(minima), dtype=np.float64)
    if values.size < 2:
        raise ConfigError("a tail fit needs the minima of at least two benign clients")
    if upper:
        values = 1.0 - values
    logs = np.log(np.clip(values, 1e-12, None))
    z = float(norm.ppf(1.0 - false_alarm_rate))
    mu, sigma = float(logs.mean()), float(logs.std(ddof=1))
    if upper:
        return math.floor((1.0 - math.exp(mu + z * sigma)) * 1e4) / 1e4
    return math.floor(math.exp(mu - z * sigma) * 1e4) / 1e4


def calibrate_limits(
    benign: Iterable[TelemetryRecord],
    *,
    false_alarm_rate: float = 1e-3,
    config: PradaConfig | None = None,
    batch_size: int = 2000,
    min_clients: int = 20,
) -> dict[str, PradaLimits]:
    """Per-model δ and spread floor from a benign recording; put them in `config.models`."""
    if not 0.0 < false_alarm_rate < 0.5:
        raise ConfigError("false_alarm_rate must lie in (0, 0.5)")
    lowest_w: dict[str, dict[str, float]] = {}
    lowest_spread: dict[str, dict[str, float]] = {}

    def observe(model_id: str, client_id: str, check: DistanceCheck) -> None:
        if check.w is not None:
            per_model = lowest_w.setdefault(model_id, {})
            per_model[client_id] = min(per_model.get(client_id, 1.0), check.w)
        if check.spread is not None:
            spreads = lowest_spread.setdefault(model_id, {})
            spreads[client_id] = min(spreads.get(client_id, math.inf), check.spread)

    detector = PradaDetector(config, observer=observe)
    records = iter(benign)
    while batch := list(islice(records, batch_size)):
        detector.update(TelemetryBatch(batch))
    limits: dict[str, PradaLimits] = {}
    for model_id, minima in lowest_w.items():
        if len(minima) < min_clients:
            raise ConfigError(
                f"model {model_id!r}: only {len(minima)} benign clients reached a PRADA test "
                f"(need {min_clients}); record longer or more clients"
            )
        spreads = lowest_spread.get(model_id, {}).values()
        limits[model_id] = PradaLimits(
            delta=max(tail_threshold(minima.values(), false_alarm_rate, upper=True), 1e-4),
            min_relative_spread=tail_threshold(spreads, false_alarm_rate, upper=False)
            if spreads
            else 0.0,
        )
    return limits
