"""Numbers detectors read from a record, in one canonical form.

The contract lets `features` and `probabilities` be lists or mappings; detectors want vectors.
A mapping is read in sorted key order, so `{"b": 2, "a": 1}` and `[1, 2]` mean the same vector
and two servers that serialise the same mapping differently still agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlwarden.schemas.telemetry import TelemetryRecord


def feature_vector(record: TelemetryRecord) -> tuple[float, ...] | None:
    """The record's features as a tuple (mapping values in sorted-key order), or None."""
    features = record.features
    if features is None:
        return None
    if isinstance(features, dict):
        return tuple(features[name] for name in sorted(features))
    return tuple(features)


def probability_vector(record: TelemetryRecord) -> tuple[float, ...] | None:
    """The record's class probabilities (mapping values in sorted-label order), or None."""
    probabilities = record.probabilities
    if probabilities is None:
        return None
    if isinstance(probabilities, dict):
        return tuple(probabilities[label] for label in sorted(probabilities))
    return tuple(probabilities)


def predicted_label(record: TelemetryRecord) -> str:
    """The prediction as a string label: `3` and `"3"` are one class."""
    return str(record.prediction)


@dataclass(frozen=True, slots=True)
class Confidence:
    """How sure the model was: top-1 probability, margin to the runner-up, entropy (nats)."""

    top1: float
    margin: float
    entropy: float


def confidence(probabilities: Sequence[float]) -> Confidence:
    """Confidence figures of one probability vector (normalised first: top-k may not sum to 1)."""
    total = sum(probabilities)
    if total <= 0.0:
        return Confidence(top1=0.0, margin=0.0, entropy=0.0)
    normalised = sorted((p / total for p in probabilities), reverse=True)
    second = normalised[1] if len(normalised) > 1 else 0.0
    entropy = -sum(p * math.log(p) for p in normalised if p > 0.0)
    return Confidence(top1=normalised[0], margin=normalised[0] - second, entropy=entropy)
