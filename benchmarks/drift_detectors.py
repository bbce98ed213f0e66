"""Throughput and state size of the per-model drift detectors, in one run.

    python benchmarks/drift_detectors.py [--events 100000] [--models 1] [--batch 500]

Builds N synthetic classifier records (4 classes, probabilities on every record, spread over
`--models` models at one version each), then times `update` alone (record construction is
not counted) for each detector with its default config, and prints events/s, alerts and the
size of `json.dumps(state_dict())`. The stream is benign: alerts should be 0. Absolute rates
vary with the machine; compare between changes on one machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.confidence_shift import ConfidenceShiftDetector
from mlwarden.detectors.prediction_drift import PredictionDriftDetector
from mlwarden.schemas.telemetry import TelemetryRecord


def records(events: int, models: int, seed: int = 1) -> list[TelemetryRecord]:
    rng = np.random.default_rng(seed)
    predictions = rng.choice(4, size=events, p=[0.1, 0.2, 0.3, 0.4]).tolist()
    top1 = (0.2 + 0.8 * rng.beta(4.875, 1.125, events)).tolist()
    rest = (rng.dirichlet(np.ones(3), size=events) * (1.0 - np.asarray(top1))[:, None]).tolist()
    out = []
    for i in range(events):
        probabilities = rest[i]
        probabilities.insert(predictions[i], top1[i])
        out.append(
            TelemetryRecord(
                event_id=f"e{i}",
                timestamp=1_790_000_000.0 + i / 20.0,
                model_id=f"m{i % models}",
                model_version="1",
                client_id=f"c{i % 97}",
                prediction=predictions[i],
                probabilities=probabilities,
            )
        )
    return out


def measure(detector: Detector, stream: list[TelemetryRecord], batch: int) -> tuple[float, int]:
    alerts = 0
    begun = time.perf_counter()
    for start in range(0, len(stream), batch):
        alerts += len(detector.update(TelemetryBatch(stream[start : start + batch])))
    return len(stream) / (time.perf_counter() - begun), alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    stream = records(args.events, args.models)
    print(f"{args.events} events, {args.models} model(s), batches of {args.batch}")
    for detector in (PredictionDriftDetector(), ConfidenceShiftDetector()):
        rate, alerts = measure(detector, stream, args.batch)
        state = len(json.dumps(detector.state_dict(), allow_nan=False))
        print(f"{detector.name:18} {rate:10,.0f} events/s  alerts {alerts}  state {state:,} B")


if __name__ == "__main__":
    main()
