"""PRADA's per-client memory: the growing sets G_c and the test on minimum distances.

Juuti et al., "PRADA: Protecting against DNN Model Stealing Attacks" (EuroS&P 2019), and the
authors' released code (SSG Aalto, `GrowingDistanceAgent`), which fixes what the paper leaves
open. For each query x predicted as class c:

* the first query of a class starts G_c = {x} (its distance list starts at 0, threshold 0);
* otherwise d_min = min L2 distance from x to G_c goes into D, and x joins G_c only when
  d_min > T_c, after which T_c = max(T_c, mean − std of the distances of G_c's members).
  Adding only "new" points keeps G a sparse cover of what the client explored, so D measures
  how far each query is from that cover — natural inputs give a bell-shaped D, synthetic
  inputs derived from earlier ones (Jacobian augmentation, boundary walks) give a spike at
  their step size and a non-normal D.
* the test runs on the classes with at least 10 distances, after dropping points further
  than 3 std from the mean, once more than 100 distances remain (the code's `> 100`).

Per-class standardisation (our change, `check_distances`): the mean, the std and the 3σ rule
are each class's own, and Shapiro–Wilk sees the pooled standardised distances. Pooled raw, a
benign client's favourite class (small d_min: its G_c is dense) and its rare classes (large
d_min) make D a mixture of bells; that mixture, not multiplicity of tests, was what took
benign clients' W under δ.

Bounded memory (our change): G keeps the `capacity` most recently added points (a ring,
float32); a class whose last point leaves G starts over as a first query. T_c is kept as
running (Welford) moments, so it costs O(1) per class instead of the full distance list.

Speed and exactness: distances of a client's queries in one batch to G and to each other
come from BLAS in Gram form, which is fast but rounds differently for different shapes; they
only pick the few rows that can be nearest, whose distance is then computed exactly
(`nearest`), so a query's d_min does not depend on how queries were batched.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from mlwarden.detectors.client_state import pack_array, unpack_array

Matrix = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]

_MAX_CHUNK = 256
# Bound on the error of ||a||² + ||b||² − 2a·b in float64, relative to ||a||² + ||b||²
# (a few d·ε for d up to ~10⁴ features, with a wide margin).
_GRAM_ERROR = 1e-9


def nearest(rows: Matrix, query: npt.NDArray[np.float32]) -> float:
    """min_j ||rows[j] − query||₂, each distance summed along one contiguous float64 row.

    The value of a pair never depends on which other rows are present, so a d_min is the
    same whether its neighbours arrived in this batch or an earlier one.
    """
    diff = rows.astype(np.float64) - query.astype(np.float64)
    return math.sqrt(float((diff * diff).sum(axis=1).min()))


def _nearest_screened(
    rows: Matrix, query: npt.NDArray[np.float32], approx: Floats, tolerance: float
) -> float:
    """`nearest`, checking exactly only the rows whose Gram-form estimate can be the least.

    |estimate − exact| ≤ tolerance for every pair, so a row whose estimate exceeds the
    smallest estimate by more than 2·tolerance cannot be nearest.
    """
    if len(rows) > 4:
        keep = approx <= approx.min() + 2.0 * tolerance
        rows = rows[keep]
    return nearest(rows, query)


@dataclass(slots=True)
class _ClassStats:
    code: int
    rows: int  # points of this class held in G now
    count: int  # distances that admitted a point to G_c (the first query counts as 0)
    mean: float
    m2: float
    threshold: float

    def admit(self, distance: float) -> None:
        """Welford update, then T_c = max(T_c, mean − std) as in the released code."""
        self.count += 1
        delta = distance - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (distance - self.mean)
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        self.threshold = max(self.threshold, self.mean - std)


class GrowingSet:
    """G = ∪ G_c for one client: a ring of float32 points with a class code per point."""

    def __init__(self, dim: int, capacity: int) -> None:
        self.dim = dim
        self.capacity = capacity
        self._rows: Matrix = np.empty((min(capacity, 8), dim), dtype=np.float32)
        self._codes = np.empty(min(capacity, 8), dtype=np.int64)
        self._size = 0
        self._head = 0  # once full: the slot of the oldest point, overwritten next
        self._classes: dict[str, _ClassStats] = {}
        self._labels: dict[int, str] = {}
        self._next_code = 0

    def __len__(self) -> int:
        return self._size

    def observe(self, queries: Matrix, labels: Sequence[str]) -> list[tuple[float | None, int]]:
        """Per query, in order: its d_min (None for the first of its class) and |G| after it."""
        chunk = min(_MAX_CHUNK, self.capacity)  # ≤ capacity: no chunk point is evicted in it
        out: list[tuple[float | None, int]] = []
        for start in range(0, len(queries), chunk):
            end = start + chunk
            out.extend(self._observe_chunk(queries[start:end], labels[start:end]))
        return out

    def _observe_chunk(
        self, chunk: Matrix, labels: Sequence[str]
    ) -> list[tuple[float | None, int]]:
        """Squared distances to G and within the chunk in Gram form (BLAS), then per query
        an exact check of the few rows that can be nearest, in arrival order."""
        held = self._size
        held_rows = self._rows[:held].copy()
        held_codes = self._codes[:held].copy()  # -1 once a point is evicted
        queries = chunk.astype(np.float64)
        rows = held_rows.astype(np.float64)
        q_norms = (queries * queries).sum(axis=1)
        r_norms = (rows * rows).sum(axis=1)
        to_held = q_norms[:, None] + r_norms[None, :] - 2.0 * (queries @ rows.T)
        within = q_norms[:, None] + q_norms[None, :] - 2.0 * (queries @ queries.T)
        largest = max(float(r_norms.max(initial=0.0)), float(q_norms.max()))
        tolerances = _GRAM_ERROR * (q_norms + largest) + 1e-300
        order = np.argsort(held_codes, kind="stable")
        codes, starts = np.unique(held_codes[order], return_index=True)
        held_groups = (
            dict(zip(codes.tolist(), np.split(order, starts[1:]), strict=True)) if held else {}
        )
        chunk_groups: dict[int, list[int]] = {}  # chunk points admitted to G, by class
        out: list[tuple[float | None, int]] = []
        for i, label in enumerate(labels):
            stats_c = self._classes.get(label)
            if stats_c is None:
                stats_c = self._new_class(label)
                chunk_groups[stats_c.code] = [i]
                self._insert(chunk[i], stats_c, held_codes)
                out.append((None, self._size))
                continue
            code = stats_c.code
            best = math.inf
            members = held_groups.get(code)
            if members is not None:
                members = members[held_codes[members] == code]  # minus evicted points
                if members.size:
                    best = _nearest_screened(
                        held_rows[members], chunk[i], to_held[i, members], tolerances[i]
                    )
            admitted = chunk_groups.get(code)
            if admitted:
                best = min(
                    best,
                    _nearest_screened(
                        chunk[admitted], chunk[i], within[i, admitted], tolerances[i]
                    ),
                )
            if best > stats_c.threshold:
                stats_c.admit(best)
                chunk_groups.setdefault(code, []).append(i)
                self._insert(chunk[i], stats_c, held_codes)
            out.append((best, self._size))
        return out

    def _new_class(self, label: str) -> _ClassStats:
        stats_c = _ClassStats(self._next_code, 0, 1, 0.0, 0.0, 0.0)
        self._next_code += 1
        self._classes[label] = stats_c
        self._labels[stats_c.code] = label
        return stats_c

    def _insert(self, point: npt.NDArray[np.float32], owner: _ClassStats, held_codes: Any) -> None:
        """Append `point`; when full, overwrite the oldest (a point held before this chunk)."""
        owner.rows += 1
        if self._size < self.capacity:
            if self._size == len(self._rows):
                grown = min(self.capacity, 2 * len(self._rows))
                self._rows = np.resize(self._rows, (grown, self.dim))
                self._codes = np.resize(self._codes, grown)
            slot = self._size
            self._size += 1
        else:
            slot = self._head
            self._head = (self._head + 1) % self.capacity
            if slot < len(held_codes):
                held_codes[slot] = -1
            evicted = self._labels[int(self._codes[slot])]
            gone = self._classes[evicted]
            gone.rows -= 1
            if gone.rows == 0:
                del self._classes[evicted]
                del self._labels[gone.code]
        self._rows[slot] = point
        self._codes[slot] = owner.code

    def _oldest_first(self) -> npt.NDArray[np.intp]:
        return (np.arange(self._size) + self._head) % max(self._size, 1)

    def state_dict(self) -> dict[str, Any]:
        order = self._oldest_first()
        return {
            "dim": self.dim,
            "rows": pack_array(self._rows[order]),
            "codes": [int(code) for code in self._codes[order]],
            "classes": [
                [label, s.code, s.rows, s.count, s.mean, s.m2, s.threshold]
                for label, s in self._classes.items()
            ],
            "next_code": self._next_code,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], capacity: int) -> GrowingSet:
        dim = int(state["dim"])
        rows = unpack_array(state["rows"], np.float32).reshape(-1, dim)[-capacity:]
        codes = np.asarray(state["codes"], dtype=np.int64)[-capacity:]
        gset = cls(dim, capacity)
        gset._rows = np.resize(rows, (max(len(rows), 8), dim)) if len(rows) else gset._rows
        gset._codes = np.resize(codes, max(len(codes), 8)) if len(codes) else gset._codes
        gset._size = len(rows)
        gset._head = 0
        gset._next_code = int(state["next_code"])
        held = Counter(int(code) for code in codes)  # recounted: capacity may have shrunk
        for label, code, _, count, mean, m2, threshold in state["classes"]:
            if held[code]:
                gset._classes[label] = _ClassStats(code, held[code], count, mean, m2, threshold)
                gset._labels[code] = label
        return gset


@dataclass(frozen=True, slots=True)
class DistanceCheck:
    """The test on D: Shapiro–Wilk W (None when D is constant) and std/mean of D."""

    samples: int
    w: float | None
    spread: float | None
    mean: float
    std: float
    minimum: float
    median: float
    maximum: float

    def d_min_summary(self) -> dict[str, float]:
        return {
            "mean": round(self.mean, 6),
            "std": round(self.std, 6),
            "min": round(self.minimum, 6),
            "median": round(self.median, 6),
            "max": round(self.maximum, 6),
        }


def check_distances(
    values: Floats,
    labels: Sequence[str],
    *,
    min_class_distances: int = 10,
    outlier_sigma: float = 3.0,
    min_samples: int = 100,
) -> DistanceCheck | None:
    """PRADA's test on the window D, or None while too few distances qualify.

    Only classes with `min_class_distances` distances in D count (the released code's 10).
    Each class's distances are then standardised by that class's own mean and std, points
    `outlier_sigma` or more from their class mean are dropped (the code's 3σ rule, applied
    within each class), and Shapiro–Wilk runs on the pooled standardised values. The spread
    (std/mean) and the summary are of the raw distances kept.

    Why standardise per class: d_min of a class shrinks as G_c fills, so a client's favourite
    class (most of its queries) has far smaller distances than its rare classes. Pooled raw,
    D is a mixture of bells of different widths — not normal although every class is — and
    its W sinks each time a rare class reaches `min_class_distances` and joins the test. The
    released code pools raw distances and so inherits this; the standardised pool keeps what
    PRADA looks for (a spike of equal steps inside a class) and drops what it does not (how
    far apart the classes' scales are).
    """
    if len(values) < min_samples:
        return None
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.bincount(inverse)
    sums = np.bincount(inverse, weights=values)
    means = sums / counts
    squares = np.bincount(inverse, weights=(values - means[inverse]) ** 2)
    stds = np.sqrt(squares / counts)
    scale = stds[inverse]
    z = np.divide(values - means[inverse], scale, out=np.zeros_like(values), where=scale > 0.0)
    keep = (counts[inverse] >= min_class_distances) & (np.abs(z) < outlier_sigma)
    if int(keep.sum()) < min_samples:
        return None
    kept, z = values[keep], z[keep]
    mean, std = float(kept.mean()), float(kept.std())
    constant = float(np.ptp(z)) == 0.0  # every class's distances equal: W is undefined
    w = None if constant else float(stats.shapiro(z).statistic)
    return DistanceCheck(
        samples=int(kept.size),
        w=w,
        spread=std / mean if mean > 0.0 else None,
        mean=mean,
        std=std,
        minimum=float(kept.min()),
        median=float(np.median(kept)),
        maximum=float(kept.max()),
    )
