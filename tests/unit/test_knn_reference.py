"""The k-NN statistics of ood_queries and sybil_steps against scipy's k-d tree on fixed data."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree  # type: ignore[import-untyped]

from mlwarden.detectors.ood_queries import (
    OodQueriesConfig,
    _conformal_quantile,
    _kth_distances,
    _Reference,
)
from mlwarden.detectors.sybil_steps import _client_code, _Ring

RNG = np.random.default_rng(20261123)
POINTS = RNG.normal(size=(400, 12))


def test_leave_one_out_kth_distances_are_scipys() -> None:
    for k in (1, 3, 7):
        distances, _ = cKDTree(POINTS).query(POINTS, k=k + 1)  # the nearest is the point itself
        np.testing.assert_allclose(_kth_distances(POINTS, k, True), distances[:, k], rtol=1e-9)


def test_a_querys_score_is_its_kth_distance_to_the_reference() -> None:
    reference = _Reference(POINTS.tolist(), {})
    reference.freeze(OodQueriesConfig(reference_size=400, coarse_components=4))
    tree = cKDTree(POINTS)
    for x in RNG.normal(size=(50, 12)) * 1.5:
        expected, _ = tree.query(x, k=3)
        assert math.isclose(reference.score(x, 3), float(expected[2]), rel_tol=1e-9)


def test_the_conformal_quantile_covers_exchangeable_scores() -> None:
    # P(new score > threshold) <= q when the new score is exchangeable with the n calibration
    # scores (Vovk et al. 2005): over many draws the exceedance rate stays at or below q.
    q, exceed, trials = 0.05, 0, 4000
    for _ in range(trials):
        scores = RNG.exponential(size=60)
        exceed += RNG.exponential() > _conformal_quantile(scores, q)
    assert exceed / trials <= q + 3 * math.sqrt(q * (1 - q) / trials)


def test_the_rings_candidates_are_the_nearest_queries_of_other_clients() -> None:
    ring = _Ring(size=256, width=12)
    clients = [f"c{i % 9}" for i in range(300)]  # wraps: the ring keeps the last 256
    points = RNG.normal(size=(300, 12)).astype(np.float32)
    for x, client in zip(points, clients, strict=True):
        ring.push(x, _client_code(client), client, "e")
    kept, kept_clients = points[-256:], clients[-256:]
    for x in RNG.normal(size=(20, 12)).astype(np.float32):
        others = np.array([c != "c4" for c in kept_clients])
        distances, _ = cKDTree(kept[others]).query(x, k=5)
        slots = ring.nearest(x, _client_code("c4"), 5)
        assert all(ring.clients[int(s)] != "c4" for s in slots)
        found = np.sort(np.linalg.norm(ring.points[slots] - x, axis=1))
        np.testing.assert_allclose(found, distances, rtol=1e-4)
