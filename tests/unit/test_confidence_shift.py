"""Confidence shift: z and CUSUM calibration, detection on both paths, rollouts, replay contract."""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm

from mlwarden.detectors.base import incident_fingerprint
from mlwarden.detectors.columns import confidence, probability_vector
from mlwarden.detectors.confidence_shift import ConfidenceShiftConfig, ConfidenceShiftDetector
from mlwarden.detectors.drift_stats import (
    RunningMoments,
    cusum_limit,
    mean_design_effects,
    siegmund_arl,
)
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.drift_streams import (
    RATE,
    T0,
    benign_with_rollout,
    classifier_stream,
    clustered_benign,
    clustered_stream,
    dumped,
    run,
)

BASELINE = 3000


def with_shift(top1_mean: float, minutes: float = 10, seed: int = 0) -> list[TelemetryRecord]:
    """Ten minutes at top-1 0.85, then `minutes` at `top1_mean`."""
    head = classifier_stream(int(600 * RATE), seed=seed)
    return head + classifier_stream(
        int(minutes * 60 * RATE), seed=seed + 1, start=600, first_id=len(head), top1_mean=top1_mean
    )


@cache
def dropped() -> list[TelemetryRecord]:
    return with_shift(0.75)


def cusum_run_lengths(
    increments: np.ndarray, k: float, h: float
) -> np.ndarray:  # increments: steps x chains
    s = np.zeros(increments.shape[1])
    lengths = np.full(increments.shape[1], increments.shape[0] + 1)
    for step, x in enumerate(increments, start=1):
        s = np.maximum(0.0, s + x - k)
        first = (s > h) & (lengths > increments.shape[0])
        lengths[first] = step
    return lengths


def test_thresholds_are_derived_from_the_run_length() -> None:
    config = ConfidenceShiftConfig()
    detector = ConfidenceShiftDetector(config)
    # Six alarm sources (3 statistics x fast/slow) share 1 false alarm per 1e7 events.
    alpha = config.evaluate_every / (6 * config.expected_run_length_events)
    assert detector.z_limit == pytest.approx(norm.isf(alpha / 2))
    assert 4.5 < detector.z_limit < 5.0
    k, h, guard = detector.cusum_k, detector.cusum_h, detector.cusum_guard
    assert k == pytest.approx(config.cusum_shift_sigmas / 2 * math.sqrt(config.evaluate_every))
    assert guard == pytest.approx(2 * math.sqrt(config.evaluate_every / config.baseline_size))
    blocks = 12 * config.expected_run_length_events / config.evaluate_every
    assert siegmund_arl(k, h, guard) == pytest.approx(blocks, rel=1e-6)
    # The seed's "z > 3" is what a false alarm every 10,000 events (8 minutes at 20/s) buys.
    loose = ConfidenceShiftDetector(ConfidenceShiftConfig(expected_run_length_events=1e4))
    assert 3.0 < loose.z_limit < 3.3
    with pytest.raises(ValidationError, match="cusum_shift_sigmas or baseline_size"):
        ConfidenceShiftConfig(cusum_shift_sigmas=0.05)


def test_siegmund_run_length_matches_simulation() -> None:
    rng = np.random.default_rng(7)
    k = 0.75
    h = cusum_limit(k, 400.0)
    lengths = cusum_run_lengths(rng.standard_normal((5000, 2000)), k, h)
    assert (lengths <= 5000).mean() > 0.99
    assert lengths.mean() == pytest.approx(400.0, rel=0.08)


def test_block_means_keep_a_skewed_statistic_near_its_target_run_length() -> None:
    # Per-event values with skewness 2.8 (far more than top-1 probabilities show). Means of
    # 100 events (exactly Gamma(50)) keep the worse side within a factor of 2 of the target;
    # the same CUSUM on single events falls short several times over.
    rng = np.random.default_rng(8)
    k, target, shape = 0.75, 400.0, 0.5
    h = cusum_limit(k, target)
    blocks = (rng.gamma(100 * shape, 1.0, (6000, 1000)) - 100 * shape) / math.sqrt(100 * shape)
    events = (rng.gamma(shape, 1.0, (1000, 1000)) - shape) / math.sqrt(shape)
    assert cusum_run_lengths(blocks, k, h).mean() > target / 2
    assert cusum_run_lengths(-blocks, k, h).mean() > target
    assert cusum_run_lengths(events, k, h).mean() < target / 4


def test_window_z_and_baseline_moments_match_numpy() -> None:
    records = dropped()
    alerts = run(ConfidenceShiftDetector(), records)
    alert = alerts[0]
    values = np.array(
        [confidence(p).top1 for r in records if (p := probability_vector(r)) is not None]
    )
    opener = next(
        i for i, r in enumerate(records) if r.event_id == alert.evidence["sample_event_ids"][-1]
    )
    window = values[opener + 1 - alert.evidence["window_events"] : opener + 1]
    base = values[:BASELINE]
    top1 = alert.evidence["statistics"]["top1"]
    assert top1["baseline_mean"] == pytest.approx(base.mean(), rel=1e-5)
    assert top1["baseline_std"] == pytest.approx(base.std(ddof=1), rel=1e-5)
    assert top1["window_mean"] == pytest.approx(window.mean(), rel=1e-5)
    clients = np.array([int(r.client_id[1:]) for r in records if probability_vector(r) is not None])

    def clustered_variance(x: np.ndarray, c: np.ndarray) -> float:
        """n/(n-1) sum_c (s_c - mean m_c)^2 / m^2 over clients, floored at the i.i.d. one."""
        groups = np.unique(c)
        spread = sum(((x[c == g]) - x.mean()).sum() ** 2 for g in groups)
        n = len(groups)
        variance = n / (n - 1) * spread / len(x) ** 2
        return max(variance, base.std(ddof=1) ** 2 / len(x))

    window_clients = clients[opener + 1 - alert.evidence["window_events"] : opener + 1]
    se = math.sqrt(
        clustered_variance(window, window_clients) + clustered_variance(base, clients[:BASELINE])
    )
    assert top1["z"] == pytest.approx((window.mean() - base.mean()) / se, rel=1e-3)
    moments = RunningMoments()
    for v in base:
        moments.add(float(v))
    assert (moments.mean, moments.std) == (
        pytest.approx(base.mean()),
        pytest.approx(base.std(ddof=1)),
    )


def test_a_top1_drop_of_0_1_is_one_alert_within_five_minutes() -> None:
    records = dropped()
    [alert] = run(ConfidenceShiftDetector(), records)
    delay = alert.detected_at.timestamp() - (T0 + 600)
    assert 0 < delay < 300, delay
    assert (alert.kind, alert.severity, alert.client_id) == (
        AlertKind.CONFIDENCE_SHIFT,
        Severity.WARNING,
        None,
    )
    evidence = alert.evidence
    assert {a["statistic"] for a in evidence["alarms"]} >= {"top1"}
    assert (
        evidence["statistics"]["top1"]["window_mean"]
        < evidence["statistics"]["top1"]["baseline_mean"] - 0.01
    )
    assert alert.score > alert.threshold == evidence["threshold"]
    assert alert.labels == {"statistic": evidence["statistic"], "path": evidence["path"]}
    opener = evidence["sample_event_ids"][-1]
    assert alert.fingerprint == incident_fingerprint("confidence_shift", "m", "1", opener)
    assert len(evidence["sample_event_ids"]) == 5


def test_an_incident_closes_when_confidence_recovers_and_a_new_one_opens() -> None:
    config = ConfidenceShiftConfig(baseline_size=1000, close_after=6)
    minute = int(60 * RATE)
    records: list[TelemetryRecord] = []
    for seed, (minutes, top1_mean) in enumerate([(2, 0.85), (3, 0.7), (4, 0.85), (3, 0.7)]):
        records += classifier_stream(
            minutes * minute,
            seed=70 + seed,
            start=len(records) / RATE,
            first_id=len(records),
            top1_mean=top1_mean,
        )
    alerts = run(ConfidenceShiftDetector(config), records)
    assert [round(a.detected_at.timestamp() - T0) // 60 for a in alerts] == [2, 9]
    assert alerts[0].fingerprint != alerts[1].fingerprint


def test_a_small_persistent_shift_is_caught_by_the_slow_path() -> None:
    # top-1 0.85 -> 0.83 is ~0.17 baseline std: a one-block window (z ~ 1.7) cannot see it,
    # so only the CUSUM can, and it must within five minutes.
    config = ConfidenceShiftConfig(window_size=100)
    alerts = run(ConfidenceShiftDetector(config), with_shift(0.83, minutes=6, seed=30))
    assert [a.evidence["path"] for a in alerts] == ["slow"]
    assert alerts[0].evidence["statistic"] in {"top1", "margin", "entropy"}
    assert alerts[0].detected_at.timestamp() - (T0 + 600) < 300


def test_long_benign_stream_with_a_benign_rollout_stays_silent() -> None:
    detector = ConfidenceShiftDetector()
    assert run(detector, benign_with_rollout()) == []
    assert detector.tracked_versions == 2


def test_realised_false_alarm_rate_on_benign_streams_is_within_budget() -> None:
    # A loose budget (1 per 2,500 events) so that false alarms are countable; ten versions so
    # that the rate is averaged over ten learned baselines, not one lucky one.
    config = ConfidenceShiftConfig(
        baseline_size=500,
        window_size=200,
        evaluate_every=20,
        expected_run_length_events=2500,
        cusum_shift_sigmas=0.4,
        close_after=1,
        rollout_check=False,
    )
    detector = ConfidenceShiftDetector(config)
    alerts, tested = [], 0
    for version in range(10):
        records = classifier_stream(
            4000,
            seed=100 + version,
            start=version * 500,
            first_id=version * 4000,
            version=str(version),
        )
        alerts += run(detector, records, size=1000)
        tested += len(records) - config.baseline_size
    budget = tested / config.expected_run_length_events  # 14 incidents at most, on average
    assert len(alerts) <= 1.5 * budget


def test_a_less_confident_rollout_is_one_critical_regression() -> None:
    v1 = classifier_stream(BASELINE + 1000, seed=51)
    v2 = classifier_stream(8000, seed=52, start=200, first_id=10**6, version="2", top1_mean=0.8)
    [alert] = run(ConfidenceShiftDetector(), v1 + v2)
    assert alert.labels == {"rollout": "regression"}
    assert (alert.kind, alert.severity, alert.model_version) == (
        AlertKind.DRIFT,
        Severity.CRITICAL,
        "2",
    )
    frozen_by = v2[BASELINE - 1]
    assert alert.fingerprint == incident_fingerprint(
        "confidence_shift", "m", "2", frozen_by.event_id
    )
    evidence = alert.evidence
    assert (evidence["previous_version"], evidence["new_version"]) == ("1", "2")
    top1 = evidence["statistics"]["top1"]
    assert top1["regressed"]
    assert top1["previous_mean"] - top1["new_mean"] == pytest.approx(0.05, abs=0.01)
    assert (
        evidence["statistics"]["entropy"]["new_mean"]
        > evidence["statistics"]["entropy"]["previous_mean"]
    )


def test_a_more_confident_rollout_is_not_a_regression() -> None:
    v1 = classifier_stream(BASELINE, seed=61)
    v2 = classifier_stream(
        BASELINE + 100, seed=62, start=200, first_id=10**6, version="2", top1_mean=0.9
    )
    assert run(ConfidenceShiftDetector(), v1 + v2) == []


def test_records_without_probabilities_are_skipped() -> None:
    records = dropped()
    bare = [
        r.model_copy(update={"probabilities": None, "event_id": f"bare-{i}"})
        for i, r in enumerate(records[::3])
    ]
    mixed = sorted([*records, *bare], key=lambda r: r.timestamp)
    assert dumped(run(ConfidenceShiftDetector(), mixed)) == dumped(
        run(ConfidenceShiftDetector(), records)
    )


def test_batch_size_does_not_change_alerts() -> None:
    records = dropped()
    expected = dumped(run(ConfidenceShiftDetector(), records, size=1))
    assert expected
    assert dumped(run(ConfidenceShiftDetector(), records, size=333)) == expected
    assert dumped(run(ConfidenceShiftDetector(), records, size=len(records))) == expected


def test_state_round_trip_mid_stream_resumes_exactly() -> None:
    records = dropped()
    expected = dumped(run(ConfidenceShiftDetector(), records))
    for cut in (BASELINE - 11, 12_307, len(records) - 999):  # learning, in the shift, later
        first = ConfidenceShiftDetector()
        head = dumped(run(first, records[:cut]))
        saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        resumed = ConfidenceShiftDetector()
        resumed.load_state_dict(saved)
        assert head + dumped(run(resumed, records[cut:])) == expected


def test_idle_versions_are_forgotten() -> None:
    config = ConfidenceShiftConfig(
        baseline_size=200,
        window_size=100,
        evaluate_every=50,
        idle_seconds=600,
        cusum_shift_sigmas=0.5,
    )
    detector = ConfidenceShiftDetector(config)
    for version in range(20):
        run(
            detector,
            classifier_stream(
                400,
                seed=version,
                start=version * 1200,
                first_id=version * 400,
                version=str(version),
            ),
        )
        assert detector.tracked_versions == 1
    assert len(json.dumps(detector.state_dict())) < 5000


def test_cluster_design_effect_matches_numpy_and_is_one_for_singletons() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=600)
    singletons = {f"c{i}": [1.0, float(v)] for i, v in enumerate(values)}
    _, [effect] = mean_design_effects(singletons, [float(values.std(ddof=1))])
    assert effect == pytest.approx(1.0, abs=0.01)
    groups = rng.integers(0, 12, size=600)
    shifted = values + groups * 0.3  # each client its own level: clustered
    clients = {
        f"c{g}": [float((groups == g).sum()), float(shifted[groups == g].sum())] for g in range(12)
    }
    std = float(shifted.std(ddof=1))
    _, [effect] = mean_design_effects(clients, [std])
    mean = shifted.mean()
    spread = sum((shifted[groups == g] - mean).sum() ** 2 for g in range(12))
    assert effect == pytest.approx(12 / 11 * spread / 600**2 / (std**2 / 600))
    assert effect > 5


def test_clustered_benign_traffic_stays_silent() -> None:
    """Heavy-tailed client sessions, each client its own confidence level: benign."""
    assert run(ConfidenceShiftDetector(), clustered_benign(), size=1000) == []


def test_a_top1_drop_of_0_1_in_clustered_traffic_is_reported_within_five_minutes() -> None:
    start = 450.0
    records = clustered_stream(900, seed=1, top1_shift=0.1, shift_from_s=start)
    alerts = run(ConfidenceShiftDetector(), records)
    assert len(alerts) == 1
    assert 0 < alerts[0].detected_at.timestamp() - (T0 + start) < 300
    assert alerts[0].evidence["statistics"]["top1"]["baseline_design_effect"] > 1
