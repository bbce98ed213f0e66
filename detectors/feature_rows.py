"""Per-version feature bookkeeping shared by `feature_drift` and `mmd_drift`.

Both detectors keep one state per (model_id, model_version), learn its reference from its own
first events, and forget a version after a long idle horizon of *event* time: the watermark is
the largest timestamp seen over all records (records without features move it too), never the
clock. A version is dropped lazily when its next record finds it idle, and swept at the end of
each batch; both use the same test, so a batch of one and a batch of thousands agree.

`sampled` picks the events the detectors look at (one in `sample_every`, by keyed hash).

Numeric arrays go into `state_dict` as base64 of little-endian float64: exact on reload (a
float printed as decimal round-trips too, but costs ~2.5x the bytes and a slower parse), and
still plain JSON for a changelog topic.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from mlwarden.detectors.baseline import ModelKey
from mlwarden.schemas.telemetry import TelemetryRecord

FloatArray = npt.NDArray[np.float64]

SAMPLE_IDS = 5
"""Event ids quoted in an alert's evidence: enough to pull the requests up, not a dump."""


def pack(values: FloatArray | Sequence[float]) -> str:
    """Floats as base64 of little-endian float64: exact, compact, JSON-able."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def unpack(text: str, shape: tuple[int, ...] | None = None) -> FloatArray:
    """The inverse of `pack` (a fresh, writable array)."""
    flat = np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)
    return flat if shape is None else flat.reshape(shape)


def pack_row(row: tuple[float, ...]) -> str:
    """`Baselines` encoder for one feature vector."""
    return pack(row)


def unpack_row(text: str) -> tuple[float, ...]:
    """`Baselines` decoder for one feature vector."""
    return tuple(unpack(text).tolist())


def stable_seed(seed: int, *parts: str) -> int:
    """A 62-bit seed from the configured one and a version's identity.

    Python's `hash()` of a string changes per process (PYTHONHASHSEED), so a restarted worker
    would draw differently; a SHA-256 digest does not.
    """
    digest = hashlib.sha256("\x1f".join((str(seed), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def sampled(event_id: str, every: int, seed: int) -> bool:
    """Whether a detector sampling one event in `every` looks at this one.

    A keyed hash of the event id, not a counter: the choice depends on the event alone (not
    on arrival order, batch boundaries or restarts), and cannot alias with traffic that
    interleaves clients in a fixed rotation, as every-n-th sampling would.
    """
    if every <= 1:
        return True
    key = (seed % 2**64).to_bytes(8, "little")
    digest = hashlib.blake2b(event_id.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "little") % every == 0


def feature_names(record: TelemetryRecord, max_features: int) -> list[str] | None:
    """Names of the monitored features when the record sent a mapping (sorted, as read)."""
    if isinstance(record.features, dict):
        return sorted(record.features)[:max_features]
    return None


def feature_label(index: int, names: Sequence[str] | None) -> str | int:
    """How evidence names a feature: its key when the server sent a mapping, else its index."""
    return names[index] if names is not None and index < len(names) else index


def significant(value: float, digits: int = 6) -> float:
    """A statistic rounded for people reading an alert; decisions use the exact value."""
    return float(f"{value:.{digits}g}")


class _Timestamped(Protocol):
    last_ts: float


StateT = TypeVar("StateT", bound=_Timestamped)


class VersionTable(Generic[StateT]):
    """Live model versions, forgotten after `idle_seconds` of event time without a record."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.watermark = -math.inf
        self._states: dict[ModelKey, StateT] = {}

    def advance(self, timestamp: float) -> None:
        self.watermark = max(self.watermark, timestamp)

    def _idle(self, state: StateT) -> bool:
        return state.last_ts <= self.watermark - self.idle_seconds

    def get(self, key: ModelKey) -> StateT | None:
        """The version's state, or None if unknown or idle past the horizon (then dropped)."""
        state = self._states.get(key)
        if state is not None and self._idle(state):
            del self._states[key]
            return None
        return state

    def put(self, key: ModelKey, state: StateT) -> None:
        self._states[key] = state

    def sweep(self) -> None:
        """Drop every idle version (end of batch)."""
        for key in [key for key, state in self._states.items() if self._idle(state)]:
            del self._states[key]

    def items(self) -> Iterator[tuple[ModelKey, StateT]]:
        return iter(list(self._states.items()))

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)

    def encode_watermark(self) -> float | None:
        return None if math.isinf(self.watermark) else self.watermark

    def decode_watermark(self, raw: float | None) -> None:
        self.watermark = -math.inf if raw is None else float(raw)
