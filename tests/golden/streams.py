"""Building blocks of the golden streams: arrivals, probability vectors, records, JSONL.

Everything is drawn from one `numpy.random.Generator` per stream, in a fixed order, so a
seed gives the same bytes on every run. Numbers are rounded before they are written (times
to the millisecond, features and probabilities to 4 decimals) to keep the files small; the
detectors only ever see the file, so what they are run on is exactly what is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z, the epoch of every golden stream

Rng = np.random.Generator
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Draft:
    """One inference before it gets its place in the stream (and so its event id)."""

    at: float  # seconds after T0
    client: str
    prediction: int
    features: Sequence[float] | None = None
    probabilities: Sequence[float] | None = None
    version: str = "1"


def arrivals(rng: Rng, rate: float, start: float, end: float) -> list[float]:
    """A Poisson process of `rate` events/s on [start, end), as sorted times."""
    count = int(rng.poisson(rate * (end - start)))
    return sorted(rng.uniform(start, end, count).tolist())


def paced(start: float, count: int, per_second: float) -> list[float]:
    """`count` evenly spaced times from `start` (a script, not a person)."""
    return [start + i / per_second for i in range(count)]


def margin_vector(rng: Rng, label: int, classes: int, low: bool) -> list[float]:
    """A probability vector predicting `label`, low-margin (top1 - top2 < 0.08) when `low`,
    otherwise with a margin of at least 0.15 (never low at the detectors' 0.1)."""
    partner = (label + int(rng.integers(1, classes))) % classes
    if low:
        top = float(rng.uniform(0.42, 0.5))
        second = top - float(rng.uniform(0.0, 0.08))
    else:
        top = float(rng.uniform(0.65, 0.97))
        second = float(rng.uniform(0.0, min(top - 0.15, 1.0 - top)))
    rest = (1.0 - top - second) / (classes - 2)
    vector = [rest] * classes
    vector[label], vector[partner] = top, second
    return vector


def confident_vector(rng: Rng, label: int, classes: int, top1_mean: float) -> list[float]:
    """A probability vector predicting `label` with top-1 = 0.4 + 0.6 * Beta (mean
    `top1_mean`, skewed like a real classifier's), the rest spread by a flat Dirichlet."""
    mean = (top1_mean - 0.4) / 0.6
    top = 0.4 + 0.6 * float(rng.beta(6.0 * mean, 6.0 * (1.0 - mean)))
    rest = (rng.dirichlet(np.ones(classes - 1)) * (1.0 - top)).tolist()
    rest.insert(label, top)
    return [float(p) for p in rest]


def favourites(rng: Rng, classes: int, weight: float = 0.9) -> Floats:
    """A benign client's class weights: one to three favourite classes get `weight`."""
    chosen = rng.choice(classes, size=int(rng.integers(1, 4)), replace=False)
    weights = np.full(classes, (1.0 - weight) / classes)
    weights[chosen] += weight * rng.dirichlet(np.ones(len(chosen)))
    normalised: Floats = weights / weights.sum()
    return normalised


def records(drafts: Iterable[Draft], *, model_id: str, prefix: str) -> list[dict[str, Any]]:
    """The stream: drafts in time order (ties keep their order), ids `<prefix>-00000`..."""
    ordered = sorted(drafts, key=lambda d: round(T0 + d.at, 3))
    out: list[dict[str, Any]] = []
    for index, draft in enumerate(ordered):
        record: dict[str, Any] = {
            "event_id": f"{prefix}-{index:05d}",
            "timestamp": round(T0 + draft.at, 3),
            "model_id": model_id,
            "model_version": draft.version,
            "client_id": draft.client,
            "prediction": draft.prediction,
        }
        if draft.features is not None:
            record["features"] = [round(float(v), 4) for v in draft.features]
        if draft.probabilities is not None:
            record["probabilities"] = [round(float(p), 4) for p in draft.probabilities]
        out.append(record)
    return out


def to_jsonl(stream: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in stream).encode()
