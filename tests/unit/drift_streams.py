"""Synthetic classifier telemetry for the drift detector tests: seeded, fast, parametrised.

A model with `len(priors)` classes predicts class c with probability priors[c] and reports a
top-1 probability 0.2 + 0.8 * Beta(a, b) (mean `top1_mean`, skewed like real classifiers),
the rest of the mass spread over the other classes by a flat Dirichlet.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from mlwarden.schemas.telemetry import TelemetryRecord

# The runner and T0 are shared with the other detectors' tests; imported from here too.
from tests.unit.detector_helpers import T0 as T0
from tests.unit.detector_helpers import dumped as dumped
from tests.unit.detector_helpers import run as run

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


def clustered_stream(
    seconds: int,
    *,
    seed: int,
    clients: int = 150,
    rate: float = RATE,
    start: float = 0.0,
    first_id: int = 0,
    version: str = "1",
    classes: int = 10,
    session_s: float = 240.0,
    top1_shift: float = 0.0,
    class0_shift: float = 0.0,
    shift_from_s: float = float("inf"),
) -> list[TelemetryRecord]:
    """Benign but clustered traffic, shaped like `streams/simulation/benign.py`.

    Heavy-tailed client rates (log-normal, sigma 1.3), on/off sessions (mean `session_s`
    on, duty cycle 0.15-0.9), one to three favourite classes per client (80% of its queries)
    and a per-client confidence level: the class mix and mean confidence of a window are far
    more variable than i.i.d. sampling says, yet nothing ever changes. From `shift_from_s`
    every top-1 probability drops by `top1_shift` and every client predicts class 0 on a further
    `class0_shift` of its queries (real, population-wide shifts).
    """
    rng = np.random.default_rng(seed)
    raw = np.exp(rng.normal(0.0, 1.3, clients))
    rates = np.minimum(raw * rate / raw.sum(), 3.0)
    duty = rng.uniform(0.15, 0.9, clients)
    weights = np.full((clients, classes), 0.2 / classes)
    for row in range(clients):
        favourites = rng.choice(classes, size=int(rng.integers(1, 4)), replace=False)
        weights[row, favourites] += 0.8 * rng.dirichlet(np.ones(len(favourites)))
    top1_means = np.clip(rng.normal(0.85, 0.05, clients), 0.5, 0.97)
    p_off = 1.0 / session_s
    p_on = p_off * duty / (1.0 - duty)
    on = rng.random(clients) < duty
    records: list[TelemetryRecord] = []
    for second in range(seconds):
        flip = rng.random(clients) < np.where(on, p_off, p_on)
        on = on ^ flip
        counts = rng.poisson(np.where(on, rates / duty, 0.0))
        shifted = second >= shift_from_s
        shift = top1_shift if shifted else 0.0
        mix = class0_shift if shifted else 0.0
        for client in np.flatnonzero(counts):
            n = int(counts[client])
            labels = rng.choice(classes, size=n, p=weights[client])
            labels[rng.random(n) < mix] = 0
            mean = (top1_means[client] - 0.2) / 0.8
            top1 = 0.2 + 0.8 * rng.beta(mean * _CONCENTRATION, (1 - mean) * _CONCENTRATION, n)
            top1 = np.clip(top1 - shift, 1.0 / classes + 1e-3, 1.0)
            rest = rng.dirichlet(np.ones(classes - 1), size=n) * (1.0 - top1)[:, None]
            offsets = np.sort(rng.random(n))
            for j in range(n):
                vector = rest[j].tolist()
                vector.insert(int(labels[j]), float(top1[j]))
                records.append(
                    TelemetryRecord(
                        event_id=f"e{first_id + len(records)}",
                        timestamp=T0 + start + second + float(offsets[j]),
                        model_id="m",
                        model_version=version,
                        client_id=f"acct-{client}",
                        prediction=int(labels[j]),
                        probabilities=vector,
                    )
                )
    records.sort(key=lambda record: record.timestamp)
    return records


@cache
def clustered_benign() -> list[TelemetryRecord]:
    """20 minutes of clustered benign traffic (~24,000 events); cached, both detectors read it."""
    return clustered_stream(1200, seed=5)
