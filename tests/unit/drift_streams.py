"""Synthetic classifier telemetry for the drift detector tests: seeded, fast, parametrised.

A model with `len(priors)` classes predicts class c with probability priors[c] and reports a
top-1 probability 0.2 + 0.8 * Beta(a, b) (mean `top1_mean`, skewed like real classifiers),
the rest of the mass spread over the other classes by a flat Dirichlet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache

import numpy as np

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0
RATE = 20.0  # events per second per model, the target load
PRIORS = (0.1, 0.2, 0.3, 0.4)
_CONCENTRATION = 6.0


def classifier_stream(
    events: int,
    *,
    seed: int,
    start: float = 0.0,
    first_id: int = 0,
    model_id: str = "m",
    version: str = "1",
    priors: Sequence[float] = PRIORS,
    top1_mean: float = 0.85,
    with_probabilities: bool = True,
) -> list[TelemetryRecord]:
    """`events` records at RATE/s from `start` seconds after T0, ids e<first_id>..."""
    rng = np.random.default_rng(seed)
    classes = len(priors)
    predictions = rng.choice(classes, size=events, p=np.asarray(priors) / sum(priors))
    beta_mean = (top1_mean - 0.2) / 0.8
    top1 = 0.2 + 0.8 * rng.beta(
        beta_mean * _CONCENTRATION, (1 - beta_mean) * _CONCENTRATION, events
    )
    rest = rng.dirichlet(np.ones(classes - 1), size=events) * (1.0 - top1)[:, None]
    labels = predictions.tolist()
    top1_list, rest_rows = top1.tolist(), rest.tolist()
    records = []
    for i in range(events):
        optional = {}
        if with_probabilities:
            vector = rest_rows[i]
            vector.insert(labels[i], top1_list[i])
            optional["probabilities"] = vector
        records.append(
            TelemetryRecord(
                event_id=f"e{first_id + i}",
                timestamp=T0 + start + i / RATE,
                model_id=model_id,
                model_version=version,
                client_id=f"c{i % 7}",
                prediction=labels[i],
                **optional,
            )
        )
    return records


@cache
def benign_with_rollout() -> list[TelemetryRecord]:
    """100,000 benign events (83 minutes at 20/s): v1, then a same-behaviour v2 from minute 50.

    Cached: both drift detectors' tests read it (records are immutable).
    """
    v1 = classifier_stream(60_000, seed=11)
    return v1 + classifier_stream(40_000, seed=12, start=3000, first_id=60_000, version="2")


def batches(records: Sequence[TelemetryRecord], size: int) -> Iterator[TelemetryBatch]:
    for begin in range(0, len(records), size):
        yield TelemetryBatch(records[begin : begin + size])


def run(detector: Detector, records: Sequence[TelemetryRecord], size: int = 500) -> list[Alert]:
    return [alert for batch in batches(records, size) for alert in detector.update(batch)]


def dumped(alerts: list[Alert]) -> list[str]:
    return [alert.model_dump_json() for alert in alerts]
