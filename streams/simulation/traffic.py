"""The simulator's common currency: blocks of queries (who asked what, when) and their clocks.

Every generator — benign clients, drift, each attack — produces a `Queries` block of numpy
arrays; the simulator concatenates the blocks, puts them in event-time order once and runs the
production model over them in one batched pass. Keeping the blocks as arrays, not as records,
is what makes an hour of traffic take seconds instead of minutes.

Randomness: each component draws from its own generator, derived from the run's seed and the
component's name (`child_rng`). Adding a draw to one component therefore never shifts the
numbers another one sees, and the same seed gives the same bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
StrArray = npt.NDArray[np.str_]

N_FEATURES: Final = 64
N_CLASSES: Final = 10
FEATURE_DECIMALS: Final = 4
"""Inputs travel as 4-decimal numbers: the precision of the wire and of the telemetry."""


@dataclass(frozen=True, slots=True)
class Queries:
    """A block of inference requests: `timestamps[i]`, `clients[i]` sent `features[i]`."""

    timestamps: FloatArray
    clients: StrArray
    features: FloatArray

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if len(self.clients) != n or self.features.shape != (n, N_FEATURES):
            raise ValueError(
                f"a block needs n timestamps, n clients and an (n, {N_FEATURES}) feature matrix; "
                f"got {n}, {len(self.clients)}, {self.features.shape}"
            )

    def __len__(self) -> int:
        return len(self.timestamps)

    @staticmethod
    def empty() -> Queries:
        return Queries(
            np.empty(0, dtype=np.float64),
            np.empty(0, dtype=np.str_),
            np.empty((0, N_FEATURES), dtype=np.float64),
        )

    @staticmethod
    def merge(blocks: list[Queries]) -> Queries:
        """All blocks as one, in event-time order (stable: equal timestamps keep block order)."""
        if not blocks:
            return Queries.empty()
        timestamps = np.concatenate([block.timestamps for block in blocks])
        order = np.argsort(timestamps, kind="stable")
        return Queries(
            timestamps[order],
            np.concatenate([block.clients for block in blocks])[order],
            np.concatenate([block.features for block in blocks])[order],
        )


def child_rng(seed: int, *names: str) -> np.random.Generator:
    """An independent generator for one named component of a seeded run."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def derived_seed(seed: int, *names: str) -> int:
    """A plain integer seed (for torch generators) derived like `child_rng`."""
    return int(child_rng(seed, *names).integers(2**62))


def as_wire(features: FloatArray) -> FloatArray:
    """Features as a client sends them: clipped to the [0, 1] feature box, 4 decimals."""
    # `+ 0.0` turns -0.0 into 0.0, so the JSON never says "-0.0".
    return np.asarray(np.round(np.clip(features, 0.0, 1.0), FEATURE_DECIMALS) + 0.0, np.float64)


def scripted_arrivals(
    rng: np.random.Generator,
    start_ts: float,
    end_ts: float,
    rate_per_s: float,
    regularity: float = 4.0,
) -> FloatArray:
    """Arrival times of a scripted client: gamma inter-arrivals with mean 1/rate.

    `regularity` is the gamma shape: 1 is a Poisson process, larger is a script with a sleep
    and some network jitter (shape 4: coefficient of variation 0.5). Attack tools pace
    themselves like this to stay under rate limits, which is why rate limits alone miss them.
    """
    if rate_per_s <= 0.0 or end_ts <= start_ts:
        return np.empty(0, dtype=np.float64)
    expected = (end_ts - start_ts) * rate_per_s
    draws = int(expected + 6.0 * np.sqrt(expected) + 16.0)
    gaps = rng.gamma(regularity, 1.0 / (rate_per_s * regularity), size=draws)
    times = start_ts + np.cumsum(gaps)
    while times[-1] < end_ts:  # rare: the draw above covers the window with ~6 sigma to spare
        more = rng.gamma(regularity, 1.0 / (rate_per_s * regularity), size=draws)
        times = np.concatenate([times, times[-1] + np.cumsum(more)])
    return times[times < end_ts]


def single_client(times: FloatArray, client: str, features: FloatArray) -> Queries:
    """A block in which one client sends every query."""
    return Queries(times, np.full(len(times), client), features)


def round_robin(times: FloatArray, clients: list[str], features: FloatArray) -> Queries:
    """A block whose i-th query goes out under `clients[i % len(clients)]` (a sybil campaign)."""
    names = np.array(clients)
    return Queries(times, names[np.arange(len(times)) % len(names)], features)
