"""PSI on reference quantile bins: a hand computation, bin edges, floors and discrete features."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlwarden.detectors.psi import bin_shares, feature_psi, psi, quantile_edges


def test_psi_matches_a_hand_computation() -> None:
    reference = np.arange(100.0)  # quartile cuts at 24.75, 49.5, 74.25: 25 values per bin
    current = [10.0] * 10 + [30.0] * 20 + [60.0] * 30 + [90.0] * 40
    edges = quantile_edges(reference, bins=4)
    assert edges.tolist() == [24.75, 49.5, 74.25]
    assert bin_shares(reference, edges).tolist() == [0.25, 0.25, 0.25, 0.25]
    assert bin_shares(current, edges).tolist() == [0.1, 0.2, 0.3, 0.4]
    by_hand = (
        (0.1 - 0.25) * math.log(0.1 / 0.25)  # 0.137444
        + (0.2 - 0.25) * math.log(0.2 / 0.25)  # 0.011157
        + (0.3 - 0.25) * math.log(0.3 / 0.25)  # 0.009116
        + (0.4 - 0.25) * math.log(0.4 / 0.25)  # 0.070501
    )
    assert by_hand == pytest.approx(0.228217, abs=1e-6)
    assert feature_psi(reference, current, bins=4) == pytest.approx(by_hand, rel=1e-12)


def test_identical_samples_have_zero_psi_and_only_the_reference_sets_the_bins() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(500)
    assert feature_psi(reference, reference) == 0.0
    shifted = reference + 1.0
    assert feature_psi(reference, shifted) > 0.25  # a 1-std shift is a "major" shift
    # The formula is symmetric (Jeffreys divergence); the quantile bins are the reference's.
    assert psi([0.5, 0.5], [0.2, 0.8]) == psi([0.2, 0.8], [0.5, 0.5])
    assert feature_psi(reference, shifted) != feature_psi(shifted, reference)


def test_bins_are_right_closed_and_empty_bins_are_floored() -> None:
    edges = np.array([1.0, 2.0])
    assert bin_shares([1.0, 2.0, 2.5, 0.0], edges).tolist() == [0.5, 0.25, 0.25]
    floored = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(floored, rel=1e-12)
    assert math.isfinite(psi([0.0, 1.0], [1.0, 0.0]))


def test_repeated_cut_points_of_a_discrete_feature_are_merged() -> None:
    reference = [0.0] * 50 + [1.0] * 50
    edges = quantile_edges(reference)  # deciles: 0 (x4), 0.5, 1 (x4)
    assert edges.tolist() == [0.0, 0.5, 1.0]
    assert bin_shares(reference, edges).tolist() == [0.5, 0.0, 0.5, 0.0]
    assert feature_psi(reference, [0.0] * 80 + [1.0] * 20) == pytest.approx(
        (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5), rel=1e-12
    )
    assert quantile_edges([3.0] * 10).tolist() == [3.0]  # constant: two bins, <= 3 and > 3


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="two bins"):
        quantile_edges([1.0, 2.0], bins=1)
    with pytest.raises(ValueError, match="empty"):
        quantile_edges([])
    with pytest.raises(ValueError, match="expected bins"):
        psi([0.5, 0.5], [1.0])
