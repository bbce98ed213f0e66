"""Throughput and state size of the feature-drift detectors (feature_drift, mmd_drift).

    python benchmarks/feature_drift_detectors.py [--events 100000] [--dims 16 32 64]
        [--threads 1] [--sample-every 10]

For each feature count: 100,000 events of one model version at 20 events/s (N(0, 1) features,
the last quarter shifted by +1 std on 3 features, so the alerting path runs too), fed in
batches of 500. Prints events/s (wall clock and process CPU), the alerts raised, and the
JSON size of `state_dict()` at the end: what a changelog topic stores per version. Record
construction is not timed. torch runs with `--threads` intra-op threads (1 is what a worker
with one partition per process should use; OpenMP spinning on busy cores costs more than
parallel kernels of this size gain). `--sample-every 1` times the detectors looking at every
event (the default configs look at 1 in 10; see `feature_window`).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.feature_drift import FeatureDriftConfig, FeatureDriftDetector
from mlwarden.detectors.mmd_drift import MMDDriftConfig, MMDDriftDetector
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0


def records(events: int, dim: int) -> list[TelemetryRecord]:
    values = np.random.default_rng(dim).standard_normal((events, dim))
    values[3 * events // 4 :, :3] += 1.0
    rows = values.tolist()
    return [
        TelemetryRecord(
            event_id=f"e{i}",
            timestamp=T0 + i / 20.0,
            model_id="m",
            model_version="1",
            client_id="c",
            prediction=0,
            features=rows[i],
        )
        for i in range(events)
    ]


def measure(detector: Detector, stream: list[TelemetryRecord]) -> tuple[float, float, int, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    alerts = 0
    for start in range(0, len(stream), 500):
        alerts += len(detector.update(TelemetryBatch(stream[start : start + 500])))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    state = len(json.dumps(detector.state_dict(), allow_nan=False))
    return len(stream) / wall, len(stream) / cpu, alerts, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample-every", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = ("features", "events/s", "cpu ev/s", "alerts", "state B")
    print(f"{'detector':<14}" + "".join(f"{h:>11}" for h in header))
    for dim in args.dims:
        stream = records(args.events, dim)
        every = args.sample_every
        for detector in (
            FeatureDriftDetector(FeatureDriftConfig(sample_every=every)),
            MMDDriftDetector(MMDDriftConfig(sample_every=every)),
        ):
            rate, cpu_rate, alerts, state = measure(detector, stream)
            print(
                f"{detector.name:<14}{dim:>11}{rate:>11,.0f}{cpu_rate:>11,.0f}{alerts:>11}"
                f"{state:>11,}"
            )


if __name__ == "__main__":
    main()
