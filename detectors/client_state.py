"""What the per-client detectors share: incidents, idle expiry, packed arrays, state versions.

An incident is one alert's worth of trouble from one client: the first finding opens it
(and raises the alert, fingerprinted by the event that opened it), later findings extend it,
and it closes once `quiet_seconds` of watermark pass without a finding. Client state that
has been idle longer than a detector's horizon is dead for every future event, so dropping
it at the end of a batch changes memory, never results. Arrays go into state as base64 of
their little-endian bytes: 4 bytes a float32 instead of ~20 characters of JSON.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from mlwarden.detectors.base import incident_fingerprint
from mlwarden.schemas.telemetry import TelemetryRecord

K = TypeVar("K")
V = TypeVar("V")


def pack_array(values: npt.NDArray[Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(values).tobytes()).decode("ascii")


def unpack_array(text: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).copy()


@dataclass(slots=True)
class Incident:
    fingerprint: str
    opened_at: float
    last_hit: float
    hits: int = 1

    def to_json(self) -> list[Any]:
        return [self.fingerprint, self.opened_at, self.last_hit, self.hits]

    @classmethod
    def from_json(cls, raw: list[Any] | None) -> Incident | None:
        return None if raw is None else cls(raw[0], raw[1], raw[2], raw[3])


def extend_or_open(
    current: Incident | None,
    detector: str,
    record: TelemetryRecord,
    *,
    watermark: float,
    quiet_seconds: float,
) -> tuple[Incident, bool]:
    """The incident after a finding at `record`, and whether it is a new one (alert)."""
    if current is not None and watermark - current.last_hit <= quiet_seconds:
        current.last_hit = max(current.last_hit, record.timestamp)
        current.hits += 1
        return current, False
    fingerprint = incident_fingerprint(detector, record.model_id, record.client_id, record.event_id)
    return Incident(fingerprint, record.timestamp, record.timestamp), True


def drop_idle(
    table: OrderedDict[K, V],
    cutoff: float,
    last_ts: Callable[[V], float],
    *,
    at_cutoff: bool = False,
) -> None:
    """Remove entries last seen before `cutoff` (and at it, if `at_cutoff`) from the front,
    least recently used first."""
    while table:
        key, oldest = next(iter(table.items()))
        seen = last_ts(oldest)
        if seen > cutoff or (seen == cutoff and not at_cutoff):
            break
        del table[key]


def check_state_version(detector: str, state: dict[str, Any], *known: int) -> int:
    """The version of a saved state, if this code can load it; ValueError otherwise."""
    version = state.get("version")
    if version not in known:
        raise ValueError(f"{detector} state version {version!r} unknown")
    return int(version)
