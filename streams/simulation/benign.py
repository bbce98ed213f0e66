"""Benign clients: the traffic every detector must stay quiet on.

Real API traffic is nothing like a flat Poisson stream, and a detector tuned on one pages on
the first busy Monday. The population here has the shapes measured on production APIs:

- Heavy-tailed volume across clients: long-run rates are log-normal (σ = 1.3), so a handful of
  integrations send most of the traffic while most accounts are quiet.
- Bursty, on/off use: each client alternates sessions (log-normal lengths, median 4 min) and
  idle periods; inside a session queries are Poisson at rate / duty-cycle.
- Diurnal modulation: the in-session rate follows a sinusoid over the client's local day
  (peak 14:00, trough 02:00, ±50 %), and clients sit in a few time zones.
- Each client has one to three favourite classes (80 % of its queries): per-client label mixes
  differ, so "this client only asks about 3s and 8s" is normal, not an attack.
- Queries are held-out natural digits, each rewritten by `natural_variation` (small affine
  jitter of the handwriting, ink gain, sensor noise) so a busy client does not resend
  near-copies of the same few hundred images; 1 % are exact retries of the client's previous
  query, as flaky networks produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from mlwarden.streams.simulation.model import DigitsData
from mlwarden.streams.simulation.traffic import (
    N_CLASSES,
    FloatArray,
    Queries,
    as_wire,
)
from mlwarden.streams.simulation.transforms import natural_variation

_DAY_S: Final = 86_400.0
_PEAK_HOUR: Final = 14.0
_TIME_ZONES_H: Final = np.array([-5.0, -3.0, 0.0, 1.0, 2.0, 8.0])
_TIME_ZONE_SHARES: Final = np.array([0.25, 0.05, 0.2, 0.25, 0.1, 0.15])


@dataclass(frozen=True, slots=True)
class BenignConfig:
    """The benign population; the defaults give ~25 events/s over 200 clients."""

    clients: int = 200
    total_rate_per_s: float = 25.0
    rate_sigma: float = 1.3
    max_client_rate_per_s: float = 3.0
    session_median_s: float = 240.0
    diurnal_amplitude: float = 0.5
    favourite_share: float = 0.8
    retry_share: float = 0.01


@dataclass(frozen=True, slots=True)
class Population:
    """Who the benign clients are and how each one behaves."""

    client_ids: list[str]
    rates_per_s: FloatArray
    """Long-run mean rate of each client (before diurnal modulation)."""
    duty_cycles: FloatArray
    """Share of time each client spends in a session."""
    time_zones_h: FloatArray
    class_weights: FloatArray
    """(clients, 10): each row sums to 1, most mass on the client's favourite classes."""


def population(rng: np.random.Generator, client_ids: list[str], config: BenignConfig) -> Population:
    """Draw the clients: heavy-tailed rates, duty cycles, time zones, favourite classes."""
    n = len(client_ids)
    raw = np.exp(rng.normal(0.0, config.rate_sigma, size=n))
    rates = np.minimum(raw * config.total_rate_per_s / raw.sum(), config.max_client_rate_per_s)
    duty = rng.uniform(0.15, 0.9, size=n)
    zones = rng.choice(_TIME_ZONES_H, size=n, p=_TIME_ZONE_SHARES)
    weights = np.full((n, N_CLASSES), (1.0 - config.favourite_share) / N_CLASSES)
    for row in range(n):
        favourites = rng.choice(N_CLASSES, size=int(rng.integers(1, 4)), replace=False)
        weights[row, favourites] += config.favourite_share * rng.dirichlet(np.ones(len(favourites)))
    return Population(client_ids, rates, duty, zones, weights)


def diurnal_factor(timestamps: FloatArray, time_zone_h: float, amplitude: float) -> FloatArray:
    """Rate multiplier over the local day: 1 + amplitude at 14:00, 1 - amplitude at 02:00."""
    local_hour = ((timestamps + time_zone_h * 3600.0) % _DAY_S) / 3600.0
    return 1.0 + amplitude * np.cos(2.0 * np.pi * (local_hour - _PEAK_HOUR) / 24.0)


def _session_arrivals(
    rng: np.random.Generator,
    start_ts: float,
    end_ts: float,
    rate_per_s: float,
    duty: float,
    time_zone_h: float,
    config: BenignConfig,
) -> FloatArray:
    """One client's arrival times: on/off sessions, Poisson inside, thinned by the hour."""
    mean_on = config.session_median_s * np.exp(0.5 * 0.8**2)
    mean_off = mean_on * (1.0 - duty) / duty
    peak = rate_per_s / duty * (1.0 + config.diurnal_amplitude)
    chunks: list[FloatArray] = []
    now = start_ts - rng.uniform(0.0, mean_on + mean_off)  # enter the cycle at a random phase
    in_session = bool(rng.random() < duty)
    while now < end_ts:
        if in_session:
            length = config.session_median_s * float(np.exp(rng.normal(0.0, 0.8)))
            lo, hi = max(now, start_ts), min(now + length, end_ts)
            if hi > lo:
                times = np.sort(rng.uniform(lo, hi, size=rng.poisson(peak * (hi - lo))))
                keep = rng.random(len(times)) * (1.0 + config.diurnal_amplitude)
                chunks.append(
                    times[keep < diurnal_factor(times, time_zone_h, config.diurnal_amplitude)]
                )
        else:
            length = float(rng.exponential(mean_off))
        now += length
        in_session = not in_session
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.float64)


def benign_queries(
    rng: np.random.Generator,
    clients: Population,
    data: DigitsData,
    start_ts: float,
    end_ts: float,
    config: BenignConfig,
) -> Queries:
    """Every benign query of the window, grouped by client (the simulator sorts by time)."""
    pools = [data.holdout_of_class(label) for label in range(N_CLASSES)]
    blocks: list[Queries] = []
    for index, client in enumerate(clients.client_ids):
        times = _session_arrivals(
            rng,
            start_ts,
            end_ts,
            float(clients.rates_per_s[index]),
            float(clients.duty_cycles[index]),
            float(clients.time_zones_h[index]),
            config,
        )
        labels = rng.choice(N_CLASSES, size=len(times), p=clients.class_weights[index])
        images = np.empty((len(times), data.x_holdout.shape[1]))
        for label in np.unique(labels):
            rows = labels == label
            pool = pools[int(label)]
            images[rows] = pool[rng.integers(0, len(pool), size=int(rows.sum()))]
        features = as_wire(natural_variation(images, rng))
        retries = np.flatnonzero(rng.random(len(times)) < config.retry_share)
        for row in retries[retries > 0]:  # in order, so a retry of a retry repeats the original
            features[row] = features[row - 1]
        blocks.append(Queries(times, np.full(len(times), client), features))
    return Queries.merge(blocks)
