"""Telemetry for the demo: benign clients with heavy-tailed Poisson rates, plus one scraper.

Benign rates are log-normal across clients (a few busy integrations, many quiet users), each
client a Poisson process; the scraper starts later and queries far faster than anyone else.
Everything derives from the seed and the start time, so a demo run can be reproduced.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from mlwarden.schemas.telemetry import TelemetryRecord

MODEL_ID = "fraud-scorer"
MODEL_VERSION = "3"
ABUSER_ID = "c-scraper-01"
_FEATURES = 8


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    benign_clients: int = 24
    benign_median_rate_per_s: float = 0.4
    benign_max_rate_per_s: float = 3.0
    abuser_rate_per_s: float = 40.0
    abuser_starts_after_s: float = 6.0


def generate(
    start_ts: float, duration_s: float, seed: int, plan: TrafficPlan | None = None
) -> Iterator[TelemetryRecord]:
    """Every record of the run in timestamp order."""
    plan = plan or TrafficPlan()
    rng = random.Random(seed)
    rates = {
        f"c-{index:03d}": min(
            plan.benign_max_rate_per_s,
            plan.benign_median_rate_per_s * math.exp(rng.gauss(0.0, 1.0)),
        )
        for index in range(plan.benign_clients)
    }
    rates[ABUSER_ID] = plan.abuser_rate_per_s
    first_at = {client: 0.0 for client in rates}
    first_at[ABUSER_ID] = plan.abuser_starts_after_s
    queue = [(first_at[c] + rng.expovariate(rate), c) for c, rate in rates.items()]
    heapq.heapify(queue)
    sequence = 0
    while queue:
        offset, client = heapq.heappop(queue)
        if offset >= duration_s:
            continue
        sequence += 1
        yield _record(rng, start_ts + offset, client, sequence)
        heapq.heappush(queue, (offset + rng.expovariate(rates[client]), client))


def _record(rng: random.Random, timestamp: float, client: str, sequence: int) -> TelemetryRecord:
    features = [round(rng.gauss(0.0, 1.0), 4) for _ in range(_FEATURES)]
    fraud = 1.0 / (1.0 + math.exp(-(sum(features[:3]) - 2.0)))
    return TelemetryRecord(
        event_id=f"demo-{sequence:07d}",
        timestamp=timestamp,
        model_id=MODEL_ID,
        model_version=MODEL_VERSION,
        client_id=client,
        features=features,
        probabilities={"legit": round(1.0 - fraud, 4), "fraud": round(fraud, 4)},
        prediction="fraud" if fraud >= 0.5 else "legit",
        latency_ms=round(rng.uniform(2.0, 9.0), 2),
        attributes={"route": "/v1/score"},
    )
