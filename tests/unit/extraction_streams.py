"""Telemetry for the extraction detectors' tests: benign digits traffic and four attacks.

Benign clients send i.i.d. natural inputs: scikit-learn's 8×8 digits scaled to [0, 1] (64
features), each client a random subset without replacement of one half of the data set (the
other half is kept for calibration). Predictions come from a nearest-centroid stand-in for the
model. Attacks, all on the same inputs:

- `jacobian`: Papernot et al. (AsiaCCS 2017) augmentation — 20 natural seeds, then rounds
  of x + λ·sign(∂F_y/∂x) with λ = 0.1 for every known x; the substitute F is linear, so the
  sign vector is that of the label's weight row.
- `uniform`: Tramèr et al. (USENIX Security 2016) — uniformly random points of [0, 1]⁶⁴.
- `boundary_walk`: HopSkipJump-like — binary searches between a source image and the
  decision boundary, and bursts of gradient-estimation probes at radius 0.02 around the
  boundary point, which creeps toward the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits

from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.detector_helpers import T0 as T0  # shared; the tests import it from here too

Array = np.ndarray


@dataclass(frozen=True)
class Digits:
    train: Array  # benign pool for calibration
    test: Array  # benign pool for evaluation (and attack seeds)
    centroids: Array

    def predict(self, x: Array) -> Array:
        return ((x[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)


@lru_cache(maxsize=1)
def digits() -> Digits:
    data, labels = load_digits(return_X_y=True)
    data = data / 16.0
    order = np.random.default_rng(0).permutation(len(data))
    centroids = np.stack([data[labels == c].mean(axis=0) for c in range(10)])
    half = len(data) // 2
    return Digits(data[order[:half]], data[order[half:]], centroids)


def to_records(
    client: str, queries: Array, times: Array, *, model: str = "digits", tag: str = ""
) -> list[TelemetryRecord]:
    predictions = digits().predict(queries)
    return [
        TelemetryRecord(
            event_id=f"{client}{tag}-{i}",
            timestamp=float(ts),
            model_id=model,
            model_version="1",
            client_id=client,
            features=[float(v) for v in query],
            prediction=int(label),
        )
        for i, (query, ts, label) in enumerate(zip(queries, times, predictions, strict=True))
    ]


def arrivals(rng: np.random.Generator, n: int, start: float, rate: float) -> Array:
    return start + np.cumsum(rng.exponential(1.0 / rate, n))


@lru_cache(maxsize=4)
def benign(
    seed: int, clients: int, *, pool: str = "test", lengths: tuple[int, int] = (150, 400)
) -> list[TelemetryRecord]:
    """Many ordinary clients, interleaved over about half an hour of event time (cached:
    do not modify the list)."""
    rng = np.random.default_rng(seed)
    data = getattr(digits(), pool)
    records: list[TelemetryRecord] = []
    for c in range(clients):
        n = int(rng.integers(lengths[0], lengths[1] + 1))
        queries = data[rng.choice(len(data), size=n, replace=False)]
        start = T0 + float(rng.uniform(0, 600))
        records += to_records(f"benign-{seed}-{c}", queries, arrivals(rng, n, start, 0.2))
    return sorted(records, key=lambda r: r.timestamp)


def jacobian(seed: int, n: int, lam: float = 0.1) -> Array:
    rng = np.random.default_rng(seed)
    known = digits().test[rng.choice(len(digits().test), size=20, replace=False)]
    substitute = rng.normal(size=(10, 64))  # a linear substitute: ∂F_y/∂x = W[y]
    out = [known]
    while sum(len(part) for part in out) < n:
        signs = np.sign(substitute[digits().predict(known)])
        fresh = np.clip(known + lam * signs, 0.0, 1.0)
        out.append(fresh)
        known = np.concatenate([known, fresh])
    return np.concatenate(out)[:n]


def uniform(seed: int, n: int) -> Array:
    return np.random.default_rng(seed).random((n, 64))


def boundary_walk(seed: int, n: int) -> Array:
    rng = np.random.default_rng(seed)
    pool = digits().test
    source = pool[rng.integers(len(pool))]
    label = digits().predict(source[None])[0]
    others = pool[digits().predict(pool) != label]
    boundary = others[rng.integers(len(others))]
    out: list[Array] = []
    while len(out) < n:
        low, high = 0.0, 1.0  # binary search on the segment source → boundary
        for _ in range(8):
            mid = (low + high) / 2
            out.append(source + mid * (boundary - source))
            low, high = (mid, high) if rng.random() < 0.5 else (low, mid)
        boundary = source + high * (boundary - source)
        for _ in range(20):  # gradient-estimation probes around the boundary point
            direction = rng.normal(size=64)
            out.append(np.clip(boundary + 0.02 * direction / np.linalg.norm(direction), 0, 1))
        boundary = boundary + 0.05 * (source - boundary)
    return np.stack(out[:n])


def attack(
    client: str, queries: Array, *, start: float = T0 + 300, rate: float = 2.0, seed: int = 0
) -> list[TelemetryRecord]:
    times = arrivals(np.random.default_rng(seed), len(queries), start, rate)
    return to_records(client, queries, times, tag="-q")


def sybil(
    prefix: str, queries: Array, ids: int, *, start: float = T0 + 300
) -> list[TelemetryRecord]:
    """One campaign's queries sent round-robin by `ids` client ids, 2 queries/s in all."""
    times = arrivals(np.random.default_rng(7), len(queries), start, 2.0)
    records: list[TelemetryRecord] = []
    for k in range(ids):
        part = slice(k, None, ids)
        records += to_records(f"{prefix}-{k}", queries[part], times[part], tag="-q")
    return sorted(records, key=lambda r: r.timestamp)


@lru_cache(maxsize=1)
def campaigns() -> dict[str, list[TelemetryRecord]]:
    """The attacks both detectors' tests replay: 300 queries each, and a 400-query boundary
    walk sent round-robin by 20 client ids ("ring-0" … "ring-19")."""
    return {
        "jacobian": attack("jacobian", jacobian(10, 300), seed=0),
        "uniform": attack("uniform", uniform(11, 300), seed=1),
        "boundary_walk": attack("boundary_walk", boundary_walk(12, 300), seed=2),
        "ring": sybil("ring", boundary_walk(9, 400), 20),
    }


def merge(*streams: list[TelemetryRecord]) -> list[TelemetryRecord]:
    return sorted((r for s in streams for r in s), key=lambda r: r.timestamp)


def attacker_index(event_id: str) -> int:
    """1-based position of an attack query in its client's stream (ids end in -q-<i>)."""
    return int(event_id.rsplit("-", 1)[1]) + 1
