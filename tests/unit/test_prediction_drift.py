"""Prediction drift: chi-square vs scipy, calibration, detection, rollouts, replay contract."""

from __future__ import annotations

import json
import math
from functools import cache

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import chi2_contingency

from mlwarden.detectors.base import incident_fingerprint
from mlwarden.detectors.drift_stats import (
    chi_square_homogeneity,
    per_test_alpha,
    psi,
    rao_scott,
    share_variances,
)
from mlwarden.detectors.prediction_drift import (
    UNSEEN,
    PredictionDriftConfig,
    PredictionDriftDetector,
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

SHIFTED = (0.25, 0.15, 0.25, 0.35)  # class 0: 10% -> 25%
BASELINE = 3000  # the default baseline size: 150 s at 20 events/s


@cache
def shifted_stream() -> list[TelemetryRecord]:
    """Normal for 10 minutes, class 0 at 25% for 5, normal for 10, shifted for 5 again."""
    minute = int(60 * RATE)
    parts = [(10, None), (5, SHIFTED), (10, None), (5, SHIFTED)]
    records: list[TelemetryRecord] = []
    for seed, (minutes, priors) in enumerate(parts):
        records += classifier_stream(
            minutes * minute,
            seed=seed,
            start=len(records) / RATE,
            first_id=len(records),
            with_probabilities=False,
            **({} if priors is None else {"priors": priors}),
        )
    return records


def test_chi_square_matches_scipy_without_pooling() -> None:
    reference = {"a": 120, "b": 300, "c": 580}
    current = {"a": 40, "b": 55, "c": 105}
    test = chi_square_homogeneity(reference, current)
    table = np.array([[120, 300, 580], [40, 55, 105]])
    statistic, p_value, dof, _ = chi2_contingency(table, correction=False)
    assert test.statistic == pytest.approx(statistic, rel=1e-12)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)
    assert (test.dof, test.cells) == (dof, 3)


def test_rare_and_unseen_classes_are_pooled_before_testing() -> None:
    # "d" and "e" are expected < 5 times in the window; "z" was never seen in the reference.
    reference = {"a": 500, "b": 400, "c": 80, "d": 15, "e": 5}
    current = {"a": 90, "b": 80, "c": 20, "d": 2, "z": 8}
    test = chi_square_homogeneity(reference, current)
    pooled = np.array([[500, 400, 80, 15 + 5 + 0], [90, 80, 20, 2 + 0 + 8]])
    statistic, p_value, dof, _ = chi2_contingency(pooled, correction=False)
    assert (test.dof, test.cells) == (dof, 4)
    assert test.statistic == pytest.approx(statistic, rel=1e-12)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)


def test_a_rare_column_too_small_alone_joins_the_smallest_column() -> None:
    reference = {"a": 600, "b": 300, "c": 2}
    current = {"a": 60, "b": 40, "c": 1}
    test = chi_square_homogeneity(reference, current)
    pooled = np.array([[600, 302], [60, 41]])
    statistic, p_value, _, _ = chi2_contingency(pooled, correction=False)
    assert test.dof == 1
    assert test.statistic == pytest.approx(statistic, rel=1e-12)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)


def test_nothing_to_test_gives_p_one() -> None:
    assert chi_square_homogeneity({"a": 100}, {"a": 50}).p_value == 1.0
    assert chi_square_homogeneity({"a": 100}, {}).p_value == 1.0


def test_psi_matches_its_definition_with_smoothing() -> None:
    reference, current = {"a": 100, "b": 900}, {"a": 300, "b": 690, "new": 10}
    p = (np.array([100, 900, 0]) + 0.5) / (1000 + 1.5)
    q = (np.array([300, 690, 10]) + 0.5) / (1000 + 1.5)
    assert psi(reference, current) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi(reference, reference) == 0.0


def test_alpha_comes_from_the_run_length_between_false_alarms() -> None:
    config = PredictionDriftConfig(evaluate_every=100, expected_run_length_events=1e7)
    assert PredictionDriftDetector(config).alpha == pytest.approx(1e-5)
    assert per_test_alpha(50, 1e6, sources=5) == pytest.approx(1e-5)
    with pytest.raises(ValidationError, match="multiple of evaluate_every"):
        PredictionDriftConfig(window_size=1000, evaluate_every=300)


def test_class_prior_shift_is_reported_once_within_five_minutes() -> None:
    records = shifted_stream()
    alerts = run(PredictionDriftDetector(), records)
    shift_at = [T0 + 600.0, T0 + 1500.0]
    assert len(alerts) == 2  # one per shifted period: the first incident closed in between
    for alert, start in zip(alerts, shift_at, strict=True):
        delay = alert.detected_at.timestamp() - start
        assert 0 < delay < 300, delay
        assert (alert.kind, alert.severity, alert.client_id) == (
            AlertKind.DRIFT,
            Severity.WARNING,
            None,
        )
        opener = next(r for r in records if r.timestamp == alert.detected_at.timestamp())
        assert alert.fingerprint == incident_fingerprint(
            "prediction_drift", "m", "1", opener.event_id
        )
        evidence = alert.evidence
        assert evidence["p_value"] < evidence["alpha"] == pytest.approx(1e-5)
        assert alert.score == evidence["chi_square"] > alert.threshold
        assert evidence["classes"][0]["class"] == "0"
        assert evidence["psi"] > 0
        assert opener.event_id == evidence["sample_event_ids"][-1]


def test_long_benign_stream_with_a_benign_rollout_stays_silent() -> None:
    detector = PredictionDriftDetector()
    assert run(detector, benign_with_rollout()) == []
    assert detector.tracked_versions == 2


def test_a_rollout_that_changes_the_class_mix_is_one_critical_alert() -> None:
    v1 = classifier_stream(BASELINE + 2000, seed=21, with_probabilities=False)
    v2 = classifier_stream(
        8000,
        seed=22,
        start=300,
        first_id=10**6,
        version="2",
        priors=SHIFTED,
        with_probabilities=False,
    )
    alerts = run(PredictionDriftDetector(), v1 + v2)
    [alert] = alerts
    assert alert.labels == {"rollout": "regression"}
    assert (alert.kind, alert.severity, alert.model_version) == (
        AlertKind.DRIFT,
        Severity.CRITICAL,
        "2",
    )
    frozen_by = v2[BASELINE - 1]
    assert alert.detected_at.timestamp() == frozen_by.timestamp
    assert alert.fingerprint == incident_fingerprint(
        "prediction_drift", "m", "2", frozen_by.event_id
    )
    evidence = alert.evidence
    assert (evidence["previous_version"], evidence["new_version"]) == ("1", "2")
    assert evidence["previous_baseline_size"] == evidence["new_baseline_size"] == BASELINE
    top = evidence["classes"][0]
    assert top["class"] == "0"
    assert top["previous_share"] == pytest.approx(0.1, abs=0.02)
    assert top["new_share"] == pytest.approx(0.25, abs=0.02)


def test_rollout_check_can_be_switched_off() -> None:
    v1 = classifier_stream(BASELINE, seed=21, with_probabilities=False)
    v2 = classifier_stream(
        BASELINE, seed=22, start=200, first_id=10**6, version="2", priors=SHIFTED
    )
    assert run(PredictionDriftDetector(PredictionDriftConfig(rollout_check=False)), v1 + v2) == []


def test_batch_size_does_not_change_alerts() -> None:
    records = shifted_stream()
    expected = dumped(run(PredictionDriftDetector(), records, size=1))
    assert expected
    assert dumped(run(PredictionDriftDetector(), records, size=777)) == expected
    assert dumped(run(PredictionDriftDetector(), records, size=len(records))) == expected


def test_state_round_trip_mid_stream_resumes_exactly() -> None:
    records = shifted_stream()
    for cut in (BASELINE - 7, len(records) // 2 + 13, 12_345):  # learning, in an incident, after
        uninterrupted = PredictionDriftDetector()
        expected = dumped(run(uninterrupted, records))
        first = PredictionDriftDetector()
        head = dumped(run(first, records[:cut]))
        saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        resumed = PredictionDriftDetector()
        resumed.load_state_dict(saved)
        assert head + dumped(run(resumed, records[cut:])) == expected
        assert resumed.state_dict() == uninterrupted.state_dict()


def test_idle_versions_are_forgotten_and_labels_are_capped() -> None:
    config = PredictionDriftConfig(
        baseline_size=100, window_size=100, evaluate_every=50, idle_seconds=600, max_classes=8
    )
    detector = PredictionDriftDetector(config)
    for version in range(30):  # a new version every 20 minutes, each with 1,000 labels
        records = [
            TelemetryRecord(
                event_id=f"v{version}-{i}",
                timestamp=T0 + version * 1200 + i,
                model_id="m",
                model_version=str(version),
                client_id="c",
                prediction=f"label-{i}",
            )
            for i in range(300)
        ]
        run(detector, records)
        assert detector.tracked_versions == 1
    state = detector.state_dict()
    [row] = state["versions"]
    baseline = row[4]  # model, version, last_ts, learned, baseline, ...
    assert len(baseline) == config.max_classes + 1
    assert baseline[UNSEEN] == 100 - 8
    assert len(json.dumps(state)) < 5000
    assert not math.isinf(state["watermark"])


def test_unknown_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="state version"):
        PredictionDriftDetector().load_state_dict({"version": 99})


def test_rao_scott_is_the_plain_test_with_one_event_per_client() -> None:
    reference = {"a": 300, "b": 200, "c": 100}
    current = {"a": 120, "b": 60, "c": 60}
    plain = chi_square_homogeneity(reference, current)
    per_event = {
        f"{side}{label}{i}": {label: 1}
        for side, counts in (("r", reference), ("c", current))
        for label, n in counts.items()
        for i in range(n)
    }
    ref_clients = {k: v for k, v in per_event.items() if k.startswith("r")}
    cur_clients = {k: v for k, v in per_event.items() if k.startswith("c")}
    corrected = rao_scott(plain, ref_clients, cur_clients)
    # cluster variance of singletons is the multinomial one, up to n/(n-1) and the pooled shares
    assert corrected.design_effect == pytest.approx(1.0, abs=0.05)
    assert corrected.statistic == pytest.approx(plain.statistic / corrected.design_effect)
    clustered = rao_scott(plain, {"r": reference}, {"c": current})  # one client per side
    assert clustered.design_effect == 1.0  # no spread between clients: floored, never below 1
    assert clustered.statistic == plain.statistic


def test_rao_scott_design_effect_matches_the_cluster_variance() -> None:
    reference = {"x": {"a": 90, "b": 10}, "y": {"a": 10, "b": 90}, "z": {"a": 50, "b": 50}}
    current = {"u": {"a": 80, "b": 20}, "v": {"a": 40, "b": 60}}
    totals = [{"a": 150, "b": 150}, {"a": 120, "b": 80}]
    plain = chi_square_homogeneity(*totals)
    corrected = rao_scott(plain, reference, current)
    events, variances = share_variances(reference, plain.columns)
    # hand: p_a = 0.5, clients' y_a - p m = 40, -40, 0 -> 3/2 * 3200 / 300^2
    assert events == 300
    assert variances[0] == pytest.approx(1.5 * 3200 / 300**2)
    _, current_variances = share_variances(current, plain.columns)
    assert current_variances[0] == pytest.approx(2 * (20**2 + 20**2) / 200**2)
    pooled = {"a": 270 / 500, "b": 230 / 500}
    trace = sum(
        (variances[j] + current_variances[j]) / pooled[label]
        for j, (label,) in enumerate(plain.columns)
    )
    delta = trace / (1 / 300 + 1 / 200)
    assert corrected.design_effect == pytest.approx(delta)
    assert corrected.statistic == pytest.approx(plain.statistic / delta)


def test_clustered_benign_traffic_stays_silent_though_plain_chi_square_pages() -> None:
    """Sessions of heavy-tailed clients with favourite classes: overdispersed, yet benign."""
    records = clustered_benign()
    config = PredictionDriftConfig()
    labels = [str(r.prediction) for r in records]
    reference: dict[str, int] = {}
    for label in labels[: config.baseline_size]:
        reference[label] = reference.get(label, 0) + 1
    plain_alarms = 0
    for end in range(config.baseline_size + config.window_size, len(labels), 500):
        window: dict[str, int] = {}
        for label in labels[end - config.window_size : end]:
            window[label] = window.get(label, 0) + 1
        plain_alarms += chi_square_homogeneity(reference, window).p_value < config.alpha()
    assert plain_alarms > 10  # the i.i.d. test would page all the time
    assert run(PredictionDriftDetector(config), records, size=1000) == []


def test_a_large_class_mix_shift_in_clustered_traffic_is_reported_within_five_minutes() -> None:
    start = 450.0
    records = clustered_stream(900, seed=2, class0_shift=0.4, shift_from_s=start)
    alerts = run(PredictionDriftDetector(), records)
    assert len(alerts) == 1
    assert 0 < alerts[0].detected_at.timestamp() - (T0 + start) < 300
    assert alerts[0].evidence["design_effect"] > 1
