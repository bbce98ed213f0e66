"""Throughput and memory of the behaviour detectors (boundary probing, class coverage,
evasion campaign) on one core.

    python benchmarks/behaviour_detectors.py [--events 100000] [--clients 2000]

Feeds N 10-class telemetry records in batches of 2,000 (the worker's batch size) to each
detector and prints events/s (CPU time of this process, so other load on the machine matters
less), the (model, client) states held at the end, and bytes per tracked client both as JSON
state and as Python heap (tracemalloc: live objects after a second, traced run).
Traffic: Zipf-distributed clients with a few favourite classes and a 3-12% low-margin rate;
1% of clients probe the boundary and 1% query every class.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.boundary_probing import BoundaryProbingDetector
from mlwarden.detectors.class_coverage import ClassCoverageDetector
from mlwarden.detectors.evasion_campaign import EvasionCampaignDetector
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0
CLASSES = 10


def traffic(events: int, clients: int, seed: int = 1) -> list[TelemetryRecord]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, clients + 1) ** 1.1
    client = rng.choice(clients, size=events, p=weights / weights.sum())
    favourites = rng.integers(0, CLASSES, (clients, 3))
    low_rate = rng.uniform(0.03, 0.12, clients)
    probing = rng.random(clients) < 0.01
    covering = ~probing & (rng.random(clients) < 0.01)
    low_rate[probing] = 0.85
    label = np.where(
        covering[client] | (rng.random(events) < 0.1),
        rng.integers(0, CLASSES, events),
        favourites[client, rng.integers(0, 3, events)],
    )
    low = rng.random(events) < low_rate[client]
    top = np.where(low, rng.uniform(0.36, 0.48, events), rng.uniform(0.6, 0.99, events))
    second = np.where(low, top - rng.uniform(0, 0.09, events), (1 - top) / 2)
    partner = (label + rng.integers(1, CLASSES, events)) % CLASSES
    times = T0 + np.cumsum(rng.exponential(0.02, events))
    records = []
    for i in range(events):
        vector = [float((1 - top[i] - second[i]) / (CLASSES - 2))] * CLASSES
        vector[label[i]], vector[partner[i]] = float(top[i]), float(second[i])
        records.append(
            TelemetryRecord(
                event_id=f"e{i}",
                timestamp=float(times[i]),
                model_id="m",
                model_version="1",
                client_id=f"c{client[i]}",
                probabilities=vector,
                prediction=int(label[i]),
            )
        )
    return records


def tracked(detector: Detector) -> int:
    state = detector.state_dict()
    return len(state.get("clients", [])) or sum(
        len({c for b in m["buckets"] for c, *_ in b[3]}) for m in state.get("models", {}).values()
    )


def feed(detector: Detector, records: list[TelemetryRecord], batch: int) -> int:
    return sum(
        len(detector.update(TelemetryBatch(records[start : start + batch])))
        for start in range(0, len(records), batch)
    )


def measure(make: type[Detector], records: list[TelemetryRecord], batch: int) -> None:
    timed = make()
    started = time.process_time()
    alerts = feed(timed, records, batch)
    elapsed = time.process_time() - started
    traced = make()  # a second run for the heap: tracing allocations slows everything down
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    feed(traced, records, batch)
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    clients = tracked(timed)
    state_bytes = len(json.dumps(timed.state_dict()))
    print(
        f"{make.name:18s} {len(records) / elapsed:9,.0f} events/s  {alerts:3d} alerts  "
        f"{clients:5d} tracked  {state_bytes / max(clients, 1):6.0f} B/client JSON  "
        f"{heap / max(clients, 1):6.0f} B/client heap"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=2_000)
    args = parser.parse_args()
    records = traffic(args.events, args.clients)
    for detector in (BoundaryProbingDetector, ClassCoverageDetector, EvasionCampaignDetector):
        measure(detector, records, args.batch)


if __name__ == "__main__":
    main()
