"""Blacklight's probabilistic fingerprint of a query: a few hashes of its quantised content.

Li, Shan, Wenger, Zhang, Zheng, Zhao, "Blacklight: Scalable Defense for Neural Networks
against Query-Based Black-Box Attacks" (USENIX Security 2022), and the authors' released
`InputTracker`. Their pipeline, for pixels in 0..255:

1. add a secret per-pixel salt and wrap (mod 255), then round to multiples of 50 — an
   attack's small perturbations rarely move a pixel to another level;
2. hash every window of 20 consecutive values (stride 1) with SHA-256;
3. keep the 50 largest distinct hashes as the fingerprint (a content-defined sample, like
   MinHash), and call two queries a match when they share at least 25 of them.

Here features are first mapped to [0, 1] with the model's `feature_range` (clipped), so the
paper's step is 50/255 of the range and the salt is a fraction of it. The salt comes from
a seeded generator (`salt_seed` — keep yours private: a known salt lets an attacker place
perturbations on level boundaries). SHA-256 per window is replaced by a salted 64-bit
polynomial hash finalised with splitmix64, computed for a whole batch at once in numpy; it
plays the same role (equal windows ⇒ equal hashes, distinct windows ⇒ distinct hashes but
for a 2⁻⁶⁴ chance) at a small fraction of the cost. A vector shorter than the window is one
window. When only `input_hash` is known, its keyed hash is the whole fingerprint, so only
exact repeats can match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from typing import Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.columns import feature_vector

Hashes = npt.NDArray[np.uint64]


class FingerprintLimits(BaseModel):
    """How one model's inputs are fingerprinted: its feature range and the paper's knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_range: tuple[float, float] = Field(default=(0.0, 1.0), description="Clipped to.")
    quantization_step: float = Field(default=50 / 255, gt=0, le=1, description="Of the range.")
    window_size: int = Field(default=20, ge=1, description="Features per hashed window.")
    top_n: int = Field(default=50, ge=1, description="Hashes kept per query.")
    match_threshold: int = Field(default=25, ge=1, description="Shared hashes (of top_n).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.feature_range[1] > self.feature_range[0]:
            raise ValueError("feature_range must be (low, high) with high > low")
        if self.match_threshold > self.top_n:
            raise ValueError("match_threshold cannot exceed top_n")
        return self


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: Hashes) -> Hashes:
    """Steele et al.'s splitmix64 finaliser: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@lru_cache(maxsize=64)
def _salt(seed: int, dim: int) -> npt.NDArray[np.float64]:
    return np.random.default_rng([seed, dim]).random(dim)


@lru_cache(maxsize=64)
def _coefficients(seed: int, width: int) -> Hashes:
    draws = np.random.default_rng([seed, 0x5EED, width]).integers(
        0, np.iinfo(np.uint64).max, size=width, dtype=np.uint64, endpoint=True
    )
    return draws | np.uint64(1)  # odd: no window position is multiplied away


class Fingerprinter:
    """Turns feature vectors (or an input hash) into top-N hash lists, deterministically."""

    def __init__(
        self,
        *,
        low: float,
        high: float,
        step: float,
        window: int,
        top_n: int,
        salt_seed: int,
    ) -> None:
        if not high > low:
            raise ValueError("feature_range must be (low, high) with high > low")
        self.low, self.high, self.step = low, high, step
        self.window, self.top_n, self.salt_seed = window, top_n, salt_seed

    @classmethod
    def from_limits(cls, limits: FingerprintLimits, salt_seed: int) -> Fingerprinter:
        low, high = limits.feature_range
        step, window, top_n = limits.quantization_step, limits.window_size, limits.top_n
        return cls(low=low, high=high, step=step, window=window, top_n=top_n, salt_seed=salt_seed)

    def levels(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Salted, wrapped, quantised features: the paper's preprocessing, one row a query."""
        unit = np.clip((features - self.low) / (self.high - self.low), 0.0, 1.0)
        salted = np.mod(unit + _salt(self.salt_seed, features.shape[1]), 1.0)
        return np.rint(salted / self.step).astype(np.int64)

    def window_hashes(self, features: npt.NDArray[np.float64]) -> Hashes:
        """hash[i, k] of the window starting at feature k of query i (n × windows)."""
        levels = self.levels(features).astype(np.uint64) + np.uint64(1)
        width = min(self.window, levels.shape[1])
        windows = np.lib.stride_tricks.sliding_window_view(levels, width, axis=1)
        with np.errstate(over="ignore"):
            raw = (windows * _coefficients(self.salt_seed, width)).sum(axis=2, dtype=np.uint64)
        return splitmix64(raw)

    def features(self, features: npt.NDArray[np.float64]) -> list[list[int]]:
        """Each query's fingerprint: its `top_n` largest distinct window hashes, descending."""
        if features.shape[0] == 0:
            return []
        ordered = np.sort(self.window_hashes(features), axis=1)[:, ::-1]
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)  # rare: equal windows
        top: list[list[int]] = ordered[:, : self.top_n].tolist()
        for row in np.flatnonzero(repeats).tolist():
            top[row] = sorted(set(ordered[row].tolist()), reverse=True)[: self.top_n]
        return top

    def input_hash(self, text: str) -> list[int]:
        """A one-hash fingerprint from the server's input hash, keyed by the salt seed."""
        key = self.salt_seed.to_bytes(8, "little", signed=True)
        digest = hashlib.blake2b(text.encode(), digest_size=8, key=key).digest()
        return [int.from_bytes(digest, "big")]


def fingerprint_batch(
    batch: TelemetryBatch, printer_for: Callable[[str], Fingerprinter]
) -> list[list[int] | None]:
    """Every record's fingerprint (None without features or input hash), computed per
    (model, width) group in one numpy pass; a record's fingerprint depends on it alone."""
    out: list[list[int] | None] = [None] * len(batch)
    groups: dict[tuple[str, int], list[tuple[int, tuple[float, ...]]]] = {}
    for index, record in enumerate(batch):
        values = feature_vector(record)
        if values:
            groups.setdefault((record.model_id, len(values)), []).append((index, values))
        elif record.input_hash:
            out[index] = printer_for(record.model_id).input_hash(record.input_hash)
    for (model_id, _), rows in groups.items():
        matrix = np.array([values for _, values in rows], dtype=np.float64)
        hashes = printer_for(model_id).features(matrix)
        for (index, _), fingerprint in zip(rows, hashes, strict=True):
            out[index] = fingerprint
    return out
