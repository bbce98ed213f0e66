"""Synthetic 10-class telemetry for the behaviour detectors' tests (seeded, pure Python).

Benign clients: natural inputs, a few favourite classes each (90% of their queries), a
heavy-tailed (Zipf) share of the traffic, and a per-client low-margin rate between 3% and
12% (population about 7.5%). Attackers are written as query profiles: which classes come back
and how often a query sits on the decision boundary.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.detector_helpers import T0

CLASSES = 10


def probabilities(rng: random.Random, label: int, low: bool) -> list[float]:
    """A 10-class vector predicting `label`; low-margin (top1 - top2 < 0.09) when `low`."""
    partner = (label + rng.randrange(1, CLASSES)) % CLASSES
    if low:
        top = rng.uniform(0.36, 0.48)
        second = top - rng.uniform(0.0, 0.09)
    else:
        top = rng.uniform(0.6, 0.99)
        second = rng.uniform(0.0, min(top - 0.15, 1.0 - top))
    others = (1.0 - top - second) / (CLASSES - 2)
    vector = [others] * CLASSES
    vector[label], vector[partner] = top, second
    return vector


def record(
    rng: random.Random, event_id: str, ts: float, client: str, label: int, low: bool, model: str
) -> TelemetryRecord:
    return TelemetryRecord(
        event_id=event_id,
        timestamp=ts,
        model_id=model,
        model_version="1",
        client_id=client,
        probabilities=probabilities(rng, label, low),
        prediction=label,
    )


@dataclass(frozen=True)
class Profile:
    """How a client queries: class weights and the share of boundary queries."""

    class_weights: tuple[float, ...]
    low_margin_rate: float

    @cached_property
    def _cumulative(self) -> list[float]:
        return list(itertools.accumulate(self.class_weights))

    def draw(self, rng: random.Random) -> tuple[int, bool]:
        cumulative = self._cumulative
        label = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        return min(label, CLASSES - 1), rng.random() < self.low_margin_rate


def benign_profile(rng: random.Random) -> Profile:
    favourites = rng.sample(range(CLASSES), rng.choices([1, 2, 3, 4], [3, 3, 2.5, 1.5])[0])
    weights = [0.1 / CLASSES] * CLASSES
    shares = [rng.uniform(0.5, 1.5) for _ in favourites]
    for cls, share in zip(favourites, shares, strict=True):
        weights[cls] += 0.9 * share / sum(shares)
    return Profile(tuple(weights), rng.uniform(0.03, 0.12))


UNIFORM = tuple([1.0] * CLASSES)
HOPSKIPJUMP = Profile((1.0, 1.0, *[0.0] * (CLASSES - 2)), 0.85)  # walks one boundary
AUGMENTATION = Profile(UNIFORM, 0.50)  # Jacobian augmentation: near boundaries, all classes
EXTRACTION = Profile(UNIFORM, 0.15)  # random / public-data queries covering every class


def benign(
    seed: int,
    events: int,
    clients: int = 2_000,
    per_second: float = 50.0,
    start: float = T0,
    model: str = "m",
    zipf: float = 1.1,
) -> list[TelemetryRecord]:
    """`events` benign queries from `clients` clients with Zipf-distributed activity."""
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) ** zipf for rank in range(clients)))
    profiles: dict[int, Profile] = {}
    out, ts = [], start
    for index in range(events):
        ts += rng.expovariate(per_second)
        rank = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
        profile = profiles.get(rank) or profiles.setdefault(rank, benign_profile(rng))
        label, low = profile.draw(rng)
        out.append(record(rng, f"b{seed}-{index}", ts, f"u{seed}-{rank}", label, low, model))
    return out


def attacker(
    seed: int,
    client: str,
    profile: Profile,
    queries: int,
    start: float,
    per_second: float = 1.0,
    model: str = "m",
) -> list[TelemetryRecord]:
    """`queries` queries from one client following `profile`, Poisson at `per_second`."""
    rng = random.Random(seed)
    out, ts = [], start
    for index in range(queries):
        ts += rng.expovariate(per_second)
        label, low = profile.draw(rng)
        out.append(record(rng, f"{client}-{seed}-{index}", ts, client, label, low, model))
    return out


def attackers(
    profiles: Sequence[tuple[str, Profile]], seeds: int, start: float, queries: int = 200
) -> dict[str, list[TelemetryRecord]]:
    """`seeds` clients per named profile, <name>-<seed>, each sending `queries` from `start`."""
    return {
        f"{name}-{seed}": attacker(seed, f"{name}-{seed}", profile, queries, start)
        for name, profile in profiles
        for seed in range(seeds)
    }


def merged(*streams: list[TelemetryRecord]) -> list[TelemetryRecord]:
    return sorted(itertools.chain(*streams), key=lambda r: (r.timestamp, r.event_id))


@functools.cache
def benign_traffic() -> tuple[TelemetryRecord, ...]:
    """100k benign queries (about 33 minutes at 50/s) from 1,000 clients; built once per run."""
    return tuple(benign(3, 100_000, clients=1_000))


def attack_base() -> list[TelemetryRecord]:
    """The first 70k benign queries: by event 50k every population estimate is calibrated."""
    return list(benign_traffic()[:70_000])


def attack_start() -> float:
    return benign_traffic()[50_000].timestamp


def queries_until(alert: Alert, records: Sequence[TelemetryRecord]) -> int:
    """How many of `records` (one attacker's) had happened when `alert` fired."""
    return sum(1 for r in records if r.timestamp <= alert.detected_at.timestamp())
