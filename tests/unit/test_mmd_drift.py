"""MMD drift: kernel statistics vs numpy, calibration, detection, silence, replay contract."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.spatial.distance import cdist, pdist
from scipy.stats import norm, rankdata

from mlwarden.detectors.base import TelemetryBatch, incident_fingerprint
from mlwarden.detectors.feature_drift import FeatureDriftDetector
from mlwarden.detectors.feature_rows import sampled
from mlwarden.detectors.mmd import (
    block_sums,
    median_bandwidth,
    mmd2,
    normal_scores,
    permutation_null,
    rbf,
    tail_quantile,
    windowed_mmd2,
)
from mlwarden.detectors.mmd_drift import MMDDriftConfig, MMDDriftDetector
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit import test_detector_conformance as conformance
from tests.unit.feature_streams import (
    RATE,
    T0,
    benign,
    correlate,
    dumped,
    episodes,
    feature_stream,
    ramp,
    run,
    scale,
    step,
    subpopulation,
)

SHIFT_STARTS = (T0 + 360.0, T0 + 1020.0)
EVERY_EVENT = MMDDriftConfig(sample_every=1)  # short streams testing one mechanism
SENSITIVE: dict[str, Any] = {  # fires on the conformance suite's benign stream, on purpose
    "baseline_size": 100,
    "window_size": 50,
    "evaluate_every": 10,
    "expected_run_length_events": 50,
    "critical_run_length_events": 50,
    "permutations": 200,
    "clear_quantile": 0.9,
    "sample_every": 1,
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """As a worker should run: one partition per process, no OpenMP spinning on busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@cache
def shifted() -> list[TelemetryRecord]:
    return episodes()


@cache
def shifted_alerts() -> list[str]:
    return dumped(run(MMDDriftDetector(), shifted()))


def test_mmd2_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    x, y, sigma = rng.standard_normal((30, 3)), rng.standard_normal((20, 3)) + 0.5, 1.3

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert mmd2(tx, ty, sigma) == pytest.approx(expected, rel=1e-12)
    assert mmd2(tx, ty, sigma, kxx_mean=float(k(x, x).mean())) == pytest.approx(expected, rel=1e-12)
    assert mmd2(tx, tx, sigma) == pytest.approx(0.0, abs=1e-15)


def test_block_sums_add_up_to_the_window_s_mmd2() -> None:
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.standard_normal((40, 3)))
    blocks = [torch.from_numpy(rng.standard_normal((5, 3)) + 0.3) for _ in range(4)]
    sums = [
        block_sums(block, torch.cat(blocks[:i][::-1]) if i else block[:0], x, 1.7)
        for i, block in enumerate(blocks)
    ]
    kxx = float(rbf(x, x, 1.7).mean())
    direct = mmd2(x, torch.cat(blocks), 1.7)
    assert windowed_mmd2(kxx, sums, 40, 5) == pytest.approx(direct, rel=1e-12)
    # the oldest block leaves: its pairs with the others stop counting
    assert windowed_mmd2(kxx, sums[1:], 40, 5) == pytest.approx(
        mmd2(x, torch.cat(blocks[1:]), 1.7), rel=1e-12
    )


def test_an_alert_s_mmd2_is_what_numpy_computes_from_the_records() -> None:
    records = shifted()
    alert = json.loads(shifted_alerts()[0])
    opener = alert["evidence"]["sample_event_ids"][-1]
    watched = [r for r in records if sampled(r.event_id, 10, 0)]  # the default 1 in 10
    end = next(i for i, r in enumerate(watched) if r.event_id == opener) + 1
    data = np.array([r.features for r in watched])
    reference, window = data[:500], data[end - 200 : end]

    def scores(values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        for j in range(values.shape[1]):
            column = np.sort(reference[:, j])
            low = np.searchsorted(column, values[:, j], "left")
            high = np.searchsorted(column, values[:, j], "right")
            out[:, j] = norm.ppf(np.clip((low + high) / 1000, 0.5 / 500, 1 - 0.5 / 500))
        return out

    x, y = scores(reference), scores(window)
    squared = np.sort(pdist(x, "sqeuclidean"))
    sigma = math.sqrt(squared[(squared.size - 1) // 2])

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert alert["evidence"]["mmd2"] == pytest.approx(expected, rel=1e-5)  # 6 digits shown
    assert alert["evidence"]["bandwidth"] == pytest.approx(sigma, rel=1e-5)


def test_median_bandwidth_matches_numpy() -> None:
    x = np.random.default_rng(1).standard_normal((41, 5))
    squared = np.sort(pdist(x, "sqeuclidean"))
    lower_median = squared[(squared.size - 1) // 2]
    assert median_bandwidth(torch.from_numpy(x)) == pytest.approx(math.sqrt(lower_median))
    assert median_bandwidth(torch.ones((10, 3), dtype=torch.float64)) == 1.0


def test_the_permutation_null_is_mmd2_of_reference_splits() -> None:
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((60, 4)))
    null = permutation_null(x, 20, 2.0, 25, seed=9)
    rng = np.random.default_rng(9)  # the draw permutation_null makes
    chosen = rng.permuted(np.tile(np.arange(60), (25, 1)), axis=1)[:, :20]
    for b in (0, 7, 24):
        mask = np.zeros(60, dtype=bool)
        mask[chosen[b]] = True
        direct = mmd2(x[torch.from_numpy(~mask)], x[torch.from_numpy(mask)], 2.0)
        assert null[b] == pytest.approx(direct, rel=1e-9)


def test_tail_quantile_is_empirical_then_exponential() -> None:
    sample = np.random.default_rng(3).exponential(1.0, 5000)
    assert tail_quantile(sample, 0.2) == np.quantile(sample, 0.8)
    assert tail_quantile(sample, 1e-6) == pytest.approx(math.log(1e6), rel=0.05)


def test_normal_scores_are_phi_inverse_of_mid_ranks() -> None:
    reference = np.array([[0.3, 5.0], [0.1, 5.0], [0.2, 7.0], [0.4, 6.0]])  # ties in column 1
    columns = torch.from_numpy(np.ascontiguousarray(np.sort(reference.T, axis=1)))
    scores = normal_scores(columns, torch.from_numpy(reference)).numpy()
    for j in range(2):
        expected = norm.ppf((rankdata(reference[:, j]) - 0.5) / 4)
        assert scores[:, j] == pytest.approx(expected, rel=1e-12)
    beyond = normal_scores(columns, torch.tensor([[-9.0, 99.0]], dtype=torch.float64)).numpy()
    assert beyond[0] == pytest.approx([norm.ppf(0.5 / 4), norm.ppf(1 - 0.5 / 4)], rel=1e-12)


def test_the_calibrated_threshold_holds_its_false_alarm_rate() -> None:
    """Fresh benign windows against a calibrated reference exceed the 5% quantile ~5% or less."""
    above, tests = 0, 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        raw = rng.standard_normal((500, 8))
        columns = torch.from_numpy(np.ascontiguousarray(np.sort(raw.T, axis=1)))
        x = normal_scores(columns, torch.from_numpy(raw))
        sigma = median_bandwidth(x)
        threshold = tail_quantile(permutation_null(x, 200, sigma, 1000, seed), 0.05)
        kxx = float(torch.exp(-torch.cdist(x, x).square() / (2 * sigma**2)).mean())
        for _ in range(100):
            y = normal_scores(columns, torch.from_numpy(rng.standard_normal((200, 8))))
            above += mmd2(x, y, sigma, kxx) > threshold
            tests += 1
    assert 0.005 < above / tests < 0.1, above / tests  # conservative: the null uses N - M points


def test_a_one_std_shift_is_one_alert_per_episode_within_five_minutes() -> None:
    records = shifted()
    alerts = run(MMDDriftDetector(), records)
    assert len(alerts) == 2  # the first incident closed when the features came back
    for alert, start in zip(alerts, SHIFT_STARTS, strict=True):
        delay = alert.detected_at.timestamp() - start
        assert 0 < delay < 300, delay  # 1 event in 10: a test every 25 s on the last 100 s
        assert (alert.kind, alert.client_id) == (AlertKind.DRIFT, None)
        evidence = alert.evidence
        opener = evidence["sample_event_ids"][-1]
        assert alert.fingerprint == incident_fingerprint("mmd_drift", "m", "1", opener)
        assert alert.score == evidence["mmd2"] > alert.threshold == evidence["threshold"]
        assert evidence["critical_threshold"] > evidence["threshold"] > 0
        assert alert.severity == (
            Severity.CRITICAL
            if evidence["mmd2"] > evidence["critical_threshold"]
            else Severity.WARNING
        )
        assert evidence["alpha"] == pytest.approx(50 * 10 / 1e7)
        assert (evidence["baseline_size"], evidence["window_size"]) == (500, 200)
        assert (evidence["evaluate_every"], evidence["sample_every"]) == (50, 10)
        assert evidence["bandwidth"] > 0
        assert evidence["top_features"][0]["feature"] in {0, 1, 2}
        assert evidence["top_features"][0]["mean_shift_std"] > 0.2
        assert len(evidence["sample_event_ids"]) == 5
    assert alerts[0].fingerprint != alerts[1].fingerprint


def test_tests_run_every_k_events_after_the_window_fills() -> None:
    """Alerts can only be raised at counts 200, 250, 300, ... after the reference froze."""
    records = feature_stream(900, dim=4, seed=3, shifts=[step(0.0, [0], size=3.0)])
    detector = MMDDriftDetector(EVERY_EVENT)
    detector.set_reference(
        "m", "1", [tuple(r) for r in np.random.default_rng(4).standard_normal((500, 4))], T0
    )
    [alert] = run(detector, records, size=1)
    assert alert.evidence["sample_event_ids"][-1] == "e199"


def test_a_new_subpopulation_is_caught_within_five_minutes() -> None:
    # A covariate shift: a third of the traffic now comes from a cluster 1.5 std away on 4 of
    # the 8 features (marginal means move by only 0.5 std).
    records = feature_stream(
        int(11 * 60 * RATE), dim=8, seed=5, shifts=[subpopulation(360.0, 1 / 3, range(4), 1.5)]
    )
    [alert] = run(MMDDriftDetector(), records)
    assert 0 < alert.detected_at.timestamp() - (T0 + 360.0) < 300
    top = [f["feature"] for f in alert.evidence["top_features"][:4]]
    assert top[0] in {0, 1, 2, 3}
    assert len({0, 1, 2, 3} & set(top)) >= 3


def test_a_change_of_spread_is_seen_where_the_per_feature_triggers_are_blind() -> None:
    records = feature_stream(int(11 * 60 * RATE), dim=8, seed=5, shifts=[scale(360.0, [0, 1], 2.0)])
    [alert] = run(MMDDriftDetector(), records)
    assert 0 < alert.detected_at.timestamp() - (T0 + 360.0) < 300
    assert run(FeatureDriftDetector(), records) == []  # ADWIN watches each feature's mean


def test_a_correlation_change_alone_is_below_this_window_s_power() -> None:
    """Documented limit: rho 0 -> 0.9 between 2 of 8 features, marginals unchanged, is too
    subtle for a 200-event window at a 1-in-1e7 false-alarm rate (larger N and M would see it)."""
    records = feature_stream(
        int(11 * 60 * RATE), dim=8, seed=5, shifts=[correlate(360.0, 0, 1, rho=0.9)]
    )
    assert run(MMDDriftDetector(), records) == []


def test_a_gradual_drift_is_caught_eventually() -> None:
    # Two features drift from +0 to +1 std over 10 minutes.
    records = feature_stream(
        int(20 * 60 * RATE), dim=8, seed=4, shifts=[ramp(300.0, 600.0, [3, 7], 1.0)]
    )
    [alert] = run(MMDDriftDetector(), records)
    assert alert.detected_at.timestamp() > T0 + 300.0
    assert {f["feature"] for f in alert.evidence["top_features"][:2]} == {3, 7}


def test_a_long_benign_stream_stays_silent() -> None:
    # 200,000 events (10,000 s at 20/s) from one distribution; every-event sampling is held
    # to its false-alarm rate by test_the_calibrated_threshold_holds_its_false_alarm_rate.
    detector = MMDDriftDetector()
    assert run(detector, benign(), size=2000) == []
    assert detector.tracked_versions == 1


def test_a_new_version_learns_its_own_reference() -> None:
    v1 = feature_stream(8000, dim=8, seed=7)
    v2 = feature_stream(
        10_000, dim=8, seed=8, start=400.0, first_id=10**6, version="2", shifts=[step(0.0, [0, 1])]
    )
    detector = MMDDriftDetector()
    assert run(detector, v1 + v2) == []
    assert detector.tracked_versions == 2


def test_batch_size_does_not_change_alerts() -> None:
    records = shifted()
    expected = shifted_alerts()
    assert dumped(run(MMDDriftDetector(), records, size=1)) == expected
    assert dumped(run(MMDDriftDetector(), records, size=333)) == expected
    assert dumped(run(MMDDriftDetector(), records, size=len(records))) == expected


def test_state_round_trip_mid_stream_resumes_exactly() -> None:
    records = shifted()
    expected = shifted_alerts()
    uninterrupted = MMDDriftDetector()
    run(uninterrupted, records)
    opener = json.loads(expected[0])["evidence"]["sample_event_ids"][-1]
    opened_at = next(i for i, r in enumerate(records) if r.event_id == opener)
    for cut in (3210, 6170, opened_at + 3333):  # learning; filling the window; in the incident
        first = MMDDriftDetector()
        head = dumped(run(first, records[:cut]))
        saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        if cut > 6000:
            assert saved["versions"][0][2]["thresholds"]  # calibrated once, then stored
        resumed = MMDDriftDetector()
        resumed.load_state_dict(saved)
        assert head + dumped(run(resumed, records[cut:])) == expected
        assert resumed.state_dict() == uninterrupted.state_dict()


def test_a_quiet_period_ends_an_incident() -> None:
    shift = [step(360.0, [0, 1, 2])]
    before = feature_stream(int(10 * 60 * RATE), dim=8, seed=9, shifts=shift)
    after = feature_stream(
        int(5 * 60 * RATE), dim=8, seed=10, start=2 * 3600.0, first_id=10**6, shifts=shift
    )
    continuous = feature_stream(int(15 * 60 * RATE), dim=8, seed=9, shifts=shift)
    assert len(run(MMDDriftDetector(), continuous)) == 1  # one incident while it lasts
    alerts = run(MMDDriftDetector(), before + after)  # traffic stops for 2 h > quiet_seconds
    assert len(alerts) == 2
    assert alerts[1].detected_at.timestamp() > T0 + 2 * 3600.0


def test_records_without_features_or_of_another_shape_are_skipped() -> None:
    records = shifted()
    extra = []
    for i, r in enumerate(records[::4]):
        extra.append(r.model_copy(update={"features": None, "event_id": f"bare-{i}"}))
        extra.append(r.model_copy(update={"features": [1.0], "event_id": f"odd-{i}"}))
    mixed = sorted([*records, *extra], key=lambda r: r.timestamp)
    assert dumped(run(MMDDriftDetector(), mixed)) == shifted_alerts()


def test_idle_versions_are_forgotten() -> None:
    config = MMDDriftConfig(
        baseline_size=100, window_size=50, idle_seconds=3600, permutations=100, sample_every=1
    )
    detector = MMDDriftDetector(config)
    for version in range(12):
        records = feature_stream(
            300, dim=4, seed=version, start=version * 86400.0, version=str(version)
        )
        run(detector, records)
        assert detector.tracked_versions == 1
    assert len(json.dumps(detector.state_dict())) < 20_000


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="smaller than baseline_size"):
        MMDDriftConfig(baseline_size=200, window_size=200)
    with pytest.raises(ValidationError, match="multiple of evaluate_every"):
        MMDDriftConfig(window_size=200, evaluate_every=30)
    with pytest.raises(ValidationError, match="critical_run_length_events"):
        MMDDriftConfig(critical_run_length_events=1e6)
    with pytest.raises(ValueError, match="state version"):
        MMDDriftDetector().load_state_dict({"version": 0})


def test_the_conformance_contract_holds_with_a_sensitive_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What tests/unit/test_detector_conformance.py checks, with the config it will need."""

    def fresh() -> MMDDriftDetector:
        return MMDDriftDetector(MMDDriftConfig.model_validate(SENSITIVE))

    records = conformance.stream(1)
    expected = conformance.comparable(conformance.run(fresh(), records))
    assert expected
    assert conformance.comparable(conformance.run(fresh(), records, size=1)) == expected
    first = fresh()
    head = conformance.comparable(conformance.run(first, records[:3000]))
    resumed = fresh()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + conformance.comparable(conformance.run(resumed, records[3000:])) == expected

    def forbidden() -> float:
        raise AssertionError("detectors must read time from events only")

    monkeypatch.setattr(time, "time", forbidden)
    monkeypatch.setattr(time, "monotonic", forbidden)
    conformance.run(fresh(), conformance.stream(5))
    bare = [r.model_copy(update={"features": None}) for r in records[:500]]
    detector = fresh()
    assert detector.update(TelemetryBatch(bare)) == []
    assert detector.tracked_versions == 0
