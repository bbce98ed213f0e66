"""Bytes per active client of every registered detector, and that idle clients give it back.

    python benchmarks/memory_per_client.py [--clients 20000] [--queries-per-client 2]

For each detector in the registry (default configuration), one at a time:
1. warm-up: 6,000 queries from 30 established clients, so per-model baselines and references
   are learnt and what follows measures per-client state only;
2. N new clients each send a few queries (64 features, 10-class probabilities) within 15
   minutes of event time — inside every detector's idle horizon, so all of them are held;
3. one query an hour of event time later, after which every detector's idle horizon (30 min
   by default) has passed.

Prints the Python heap (tracemalloc: live allocations) after 2 less after 1, per new client;
the JSON state per new client; and the heap still held after 3 (what idle clients leave
behind: should be ~0), with the extrapolation to a million concurrently active clients.

Read two rows differently: `blacklight` holds fingerprints per *query* (45 hashes each),
capped per model by `max_queries_per_model`, so its figure is per query held, not growing
with clients beyond that cap; `sybil_steps` holds a fixed ring of queries per model version.
What stays after idle expiry is dict capacity: Python dicts keep their peak size after
deletions, so that is bounded by the peak, not by the clients ever seen.
"""

from __future__ import annotations

import argparse
import json
import tracemalloc

import numpy as np

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.registry import DETECTORS, DetectorSuiteConfig, create_detector
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0
FEATURES, CLASSES = 64, 10


def records(
    rng: np.random.Generator, clients: list[str], start: float, span: float
) -> list[TelemetryRecord]:
    n = len(clients)
    features = np.round(rng.beta(2.0, 5.0, (n, FEATURES)), 4)
    logits = rng.normal(0.0, 2.0, (n, CLASSES))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    times = start + np.sort(rng.uniform(0.0, span, n))
    return [
        TelemetryRecord(
            event_id=f"e{start:.0f}-{i}",
            timestamp=float(times[i]),
            model_id="m",
            model_version="1",
            client_id=clients[i],
            features=features[i].tolist(),
            probabilities=np.round(probabilities[i], 5).tolist(),
            prediction=int(probabilities[i].argmax()),
        )
        for i in range(n)
    ]


def feed(detector: Detector, stream: list[TelemetryRecord]) -> None:
    for start in range(0, len(stream), 2000):
        detector.update(TelemetryBatch(stream[start : start + 2000]))


def measure(name: str, clients: int, per_client: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(7)
    warm = records(rng, [f"regular-{i % 30}" for i in range(6000)], T0, 600.0)
    new_ids = [f"new-{i}" for i in range(clients) for _ in range(per_client)]
    rng.shuffle(new_ids)
    burst = records(rng, list(new_ids), T0 + 600.0, 900.0)
    later = records(rng, ["regular-0"], T0 + 600.0 + 900.0 + 3600.0, 1.0)
    detector = create_detector(name, DetectorSuiteConfig())
    feed(detector, warm)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state_before = len(json.dumps(detector.state_dict()))
    feed(detector, burst)
    held = tracemalloc.get_traced_memory()[0] - before
    state_bytes = len(json.dumps(detector.state_dict())) - state_before
    feed(detector, later)
    left = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / clients, state_bytes / clients, left / clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--queries-per-client", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.clients:,} new clients x {args.queries_per_client} queries, 64 features, "
        "10 classes; bytes per new client"
    )
    print(
        f"{'detector':18} {'heap held':>10} {'JSON state':>11} {'heap after idle':>16}  "
        f"{'1M active clients':>18}"
    )
    for name in sorted(DETECTORS):
        heap, state, left = measure(name, args.clients, args.queries_per_client)
        print(
            f"{name:18} {heap:10,.0f} {state:11,.0f} {left:16,.0f}  {heap * 1e6 / 2**30:15.2f} GiB"
        )


if __name__ == "__main__":
    main()
