"""Throughput and state size of the extraction detectors (PRADA, Blacklight) on one core.

    python benchmarks/extraction_detectors.py [--events 100000] [--features 64] [--clients 400]

Feeds N telemetry records in batches of 2,000 (the worker's batch size) to each detector
and prints events/s (CPU time of this process, so other load on the machine matters less)
and the JSON state size per tracked (model, client) pair at the end. The traffic is
synthetic but shaped like the tests': most clients send i.i.d. points of a 10-cluster
mixture in [0, 1]^F; 2% of clients walk the boundary with near-duplicate queries.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.blacklight import BlacklightDetector
from mlwarden.detectors.prada import PradaDetector
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0


def traffic(events: int, features: int, clients: int, seed: int = 1) -> list[TelemetryRecord]:
    rng = np.random.default_rng(seed)
    centres = rng.random((10, features))
    walkers = max(1, clients // 50)
    client = rng.integers(0, clients, events)
    label = rng.integers(0, 10, events)
    points = np.clip(centres[label] + rng.normal(0, 0.15, (events, features)), 0, 1)
    walking = client < walkers
    drift = np.cumsum(rng.normal(0, 0.002, (events, features)), axis=0)
    points[walking] = np.clip(centres[client[walking] % 10] + drift[walking], 0, 1)
    times = T0 + np.cumsum(rng.exponential(0.02, events))
    return [
        TelemetryRecord(
            event_id=f"e{i}",
            timestamp=float(times[i]),
            model_id="m",
            model_version="1",
            client_id=f"c{client[i]}",
            features=points[i].tolist(),
            prediction=int(label[i]),
        )
        for i in range(events)
    ]


def measure(detector: Detector, records: list[TelemetryRecord], batch: int) -> tuple[float, int]:
    alerts = 0
    start = time.process_time()
    for offset in range(0, len(records), batch):
        alerts += len(detector.update(TelemetryBatch(records[offset : offset + batch])))
    return len(records) / (time.process_time() - start), alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    records = traffic(args.events, args.features, args.clients)
    prada, blacklight = PradaDetector(), BlacklightDetector()
    for detector in (prada, blacklight):
        rate, alerts = measure(detector, records, args.batch)
        print(f"{detector.name:>10}: {rate:>9,.0f} events/s, {alerts} alerts")
    state = len(json.dumps(prada.state_dict()))
    print(
        f"     prada state: {state / 1e6:.2f} MB for {prada.tracked_clients} clients = "
        f"{state / prada.tracked_clients:,.0f} bytes per tracked client"
    )
    full = blacklight.state_dict()
    per_client = len(json.dumps(full["clients"]))
    stores = len(json.dumps(full["stores"]))
    queries = blacklight.indexed_queries
    print(
        f"blacklight state: {per_client / blacklight.tracked_clients:,.0f} bytes per tracked "
        f"client ({blacklight.tracked_clients}) + per-model hash store {stores / 1e6:.2f} MB "
        f"for {queries} indexed queries = {stores / max(queries, 1):,.0f} bytes per query"
    )


if __name__ == "__main__":
    main()
