"""Feature drift: KS vs scipy, triggers vs river, detection, silence, replay contract."""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from river import drift
from scipy.stats import ks_2samp

from mlwarden.detectors.base import TelemetryBatch, incident_fingerprint
from mlwarden.detectors.feature_drift import FeatureDriftConfig, FeatureDriftDetector
from mlwarden.detectors.river_triggers import DriftTriggerConfig, TriggerBank
from mlwarden.detectors.two_sample import ks_critical, ks_p_value, ks_statistic
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit import test_detector_conformance as conformance
from tests.unit.feature_streams import (
    RATE,
    T0,
    benign,
    dumped,
    episodes,
    feature_stream,
    ramp,
    run,
    step,
)

SHIFT_STARTS = (T0 + 360.0, T0 + 1020.0)
EVERY_EVENT = FeatureDriftConfig(sample_every=1)  # short streams testing one mechanism
SENSITIVE: dict[str, Any] = {  # fires on the conformance suite's benign stream, on purpose
    "baseline_size": 100,
    "window_size": 50,
    "method": "page_hinkley",
    "ph_threshold": 2.0,
    "ph_delta": 0.0,
    "ph_min_instances": 5,
    "confirm_alpha": 0.2,
    "clear_alpha": 0.5,
    "sample_every": 1,
}


@cache
def shifted() -> list[TelemetryRecord]:
    return episodes()


@cache
def shifted_alerts() -> list[str]:
    return dumped(run(FeatureDriftDetector(), shifted()))


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    reference = np.round(rng.standard_normal(500), 1)  # rounded: ties on both sides
    for shift in (0.0, 0.15, 0.3, 0.6):
        sample = np.round(rng.standard_normal(200) + shift, 1)
        expected = ks_2samp(reference, sample, method="exact")
        statistic = ks_statistic(np.sort(reference), sample)
        assert statistic == pytest.approx(expected.statistic, rel=1e-12)
        if expected.pvalue > 1e-12:
            assert ks_p_value(statistic, 500, 200) == pytest.approx(expected.pvalue, rel=0.15)
    for alpha in (0.05, 1e-3, 1e-6):
        assert ks_p_value(ks_critical(alpha, 500, 200), 500, 200) == pytest.approx(alpha, rel=1e-6)


def river_detector(method: str, n: int, j: int) -> drift.base.DriftDetector:
    """The river detector a bank of `n` features should hold for feature `j`, built by hand."""
    if method == "adwin":
        return drift.ADWIN(delta=0.002 / n, clock=32)
    if method == "page_hinkley":
        return drift.PageHinkley(min_instances=30, delta=0.25, threshold=50.0)
    return drift.KSWIN(alpha=0.005 / n, window_size=100, stat_size=30, seed=7 + j)


@pytest.mark.parametrize(
    ("method", "events"), [("adwin", 4000), ("page_hinkley", 4000), ("kswin", 400)]
)
def test_a_bank_saved_and_restored_fires_where_river_fires(method: str, events: int) -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal((events, 3))
    values[events // 2 :, 1] += 3.0
    values[events // 4 :, 2] *= 3.0
    plain = [river_detector(method, 3, j) for j in range(3)]
    config = DriftTriggerConfig(method=method)  # type: ignore[arg-type]
    bank = TriggerBank(config, 3, seed=7)
    fired_river, fired_bank = [], []
    for i, row in enumerate(values.tolist()):
        if i % 250 == 249:  # through JSON, into a new bank, every 250 values
            restored = TriggerBank(config, 3, seed=7)
            restored.load_state_dict(json.loads(json.dumps(bank.state_dict(), allow_nan=False)))
            bank = restored
        fired_bank.append(bank.update(row))
        for detector, value in zip(plain, row, strict=True):
            detector.update(value)
        fired_river.append([j for j, d in enumerate(plain) if d.drift_detected])
    assert fired_bank == fired_river
    assert any(1 in fired for fired in fired_river[events // 2 :])  # not vacuous


def test_a_one_std_shift_is_one_alert_per_episode_within_five_minutes() -> None:
    records = shifted()
    alerts = run(FeatureDriftDetector(), records)
    assert len(alerts) == 2  # the first incident closed when the features came back
    for alert, start in zip(alerts, SHIFT_STARTS, strict=True):
        delay = alert.detected_at.timestamp() - start
        # 1 event in 10: ~40-70 sampled to trigger, 200 sampled to confirm, ~2 minutes
        assert 0 < delay < 300, delay
        assert (alert.kind, alert.severity, alert.client_id) == (
            AlertKind.DRIFT,
            Severity.CRITICAL,  # PSI > 0.25 on a confirmed feature
            None,
        )
        evidence = alert.evidence
        opener = evidence["sample_event_ids"][-1]
        assert alert.fingerprint == incident_fingerprint("feature_drift", "m", "1", opener)
        assert next(r for r in records if r.event_id == opener).timestamp == (
            alert.detected_at.timestamp()
        )
        features = evidence["features"]
        assert features
        assert {f["feature"] for f in features} <= {0, 1, 2}
        for f in features:
            assert f["psi"] > 0.25
            assert f["p_value"] < evidence["confirm_alpha"]
            assert f["mean_shift_std"] == pytest.approx(1.0, abs=0.35)
        assert {f["feature"] for f in evidence["psi_top"][:3]} == {0, 1, 2}
        assert alert.score == features[0]["ks_statistic"] > alert.threshold
        assert (evidence["window_size"], evidence["baseline_size"]) == (200, 500)
        assert evidence["sample_every"] == 10
    assert alerts[0].fingerprint != alerts[1].fingerprint


def test_a_gradual_drift_is_caught_eventually() -> None:
    # Two features drift from +0 to +1 std over 10 minutes, after the reference is learnt.
    records = feature_stream(
        int(20 * 60 * RATE), dim=8, seed=4, shifts=[ramp(300.0, 600.0, [3, 7], 1.0)]
    )
    [alert] = run(FeatureDriftDetector(), records)
    assert alert.detected_at.timestamp() > T0 + 300.0
    assert {f["feature"] for f in alert.evidence["features"]} <= {3, 7}


@pytest.mark.parametrize("every", [10, 1])
def test_a_long_benign_stream_stays_silent(every: int) -> None:
    # 200,000 events (10,000 s at 20/s) from one distribution: watching 1 in 10, and all.
    detector = FeatureDriftDetector(FeatureDriftConfig(sample_every=every))
    assert run(detector, benign(), size=2000) == []
    assert detector.tracked_versions == 1


def test_a_new_version_learns_its_own_reference() -> None:
    v1 = feature_stream(8000, dim=8, seed=5)
    v2 = feature_stream(
        10_000,
        dim=8,
        seed=6,
        start=400.0,
        first_id=10**6,
        version="2",
        shifts=[step(0.0, range(8))],
    )
    detector = FeatureDriftDetector()
    assert run(detector, v1 + v2) == []
    assert detector.tracked_versions == 2


def test_batch_size_does_not_change_alerts() -> None:
    records = shifted()
    expected = dumped(run(FeatureDriftDetector(), records, size=1))
    assert expected == shifted_alerts()
    assert dumped(run(FeatureDriftDetector(), records, size=333)) == expected
    assert dumped(run(FeatureDriftDetector(), records, size=len(records))) == expected


def test_state_round_trip_mid_stream_resumes_exactly() -> None:
    records = shifted()
    expected = shifted_alerts()
    opener = json.loads(expected[0])["evidence"]["sample_event_ids"][-1]
    opened_at = next(i for i, r in enumerate(records) if r.event_id == opener)
    # learning; between the trigger and its confirmation; inside the incident
    for cut in (3210, opened_at - 600, opened_at + 7000):
        first = FeatureDriftDetector()
        head = dumped(run(first, records[:cut]))
        saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        resumed = FeatureDriftDetector()
        resumed.load_state_dict(saved)
        assert head + dumped(run(resumed, records[cut:])) == expected
    pending = FeatureDriftDetector()
    run(pending, records[: opened_at - 600])
    assert pending.state_dict()["versions"][0][2]["pending"]  # the cut did land mid-confirmation


def test_one_event_in_sample_every_is_watched_whatever_the_order() -> None:
    head = shifted()[:2000]
    forward, backward = FeatureDriftDetector(), FeatureDriftDetector()
    run(forward, head)
    run(backward, head[::-1])

    def learnt(detector: FeatureDriftDetector) -> list[str]:
        [[_, _, state]] = detector.state_dict()["versions"]
        [[_, _, rows]] = state["baseline"]["learning"]
        return sorted(rows)

    assert 160 < len(learnt(forward)) < 240  # ~1 in 10, by a keyed hash of the event id
    assert learnt(forward) == learnt(backward)  # the same events, whatever their order


def test_records_without_features_or_of_another_shape_are_skipped() -> None:
    records = shifted()
    extra = []
    for i, r in enumerate(records[::4]):
        bare = r.model_copy(update={"features": None, "event_id": f"bare-{i}"})
        odd = r.model_copy(update={"features": [1.0, 2.0], "event_id": f"odd-{i}"})
        extra += [bare, odd]
    mixed = sorted([*records, *extra], key=lambda r: r.timestamp)
    detector = FeatureDriftDetector()
    assert dumped(run(detector, mixed)) == shifted_alerts()
    assert detector.state_dict()["versions"][0][2]["skipped"] == len(extra) // 2


def test_mapping_features_are_named_in_the_evidence() -> None:
    names = [f"f{j:02d}" for j in range(8)]
    records = feature_stream(
        6000, dim=8, seed=8, names=names[::-1], shifts=[step(120.0, [2], size=1.5)]
    )
    [alert] = run(FeatureDriftDetector(EVERY_EVENT), records)
    # features={"f07": x0, "f06": x1, "f05": x2, ...}: the shifted x2 is sent as "f05"
    assert [f["feature"] for f in alert.evidence["features"]] == ["f05"]


def test_idle_versions_are_forgotten() -> None:
    config = FeatureDriftConfig(
        baseline_size=100, window_size=50, idle_seconds=3600, sample_every=1
    )
    detector = FeatureDriftDetector(config)
    for version in range(12):
        records = feature_stream(
            300, dim=4, seed=version, start=version * 86400.0, version=str(version)
        )
        run(detector, records)
        assert detector.tracked_versions == 1
    assert len(json.dumps(detector.state_dict())) < 60_000


def test_a_loaded_reference_needs_no_learning() -> None:
    reference = np.random.default_rng(1).standard_normal((500, 16)).tolist()
    records = feature_stream(2400, dim=16, seed=2, shifts=[step(30.0, [5])])
    detector = FeatureDriftDetector(EVERY_EVENT)
    detector.set_reference("m", "1", [tuple(row) for row in reference], as_of=T0)
    [alert] = run(detector, records)
    assert alert.evidence["features"][0]["feature"] == 5
    assert alert.detected_at.timestamp() < T0 + 60.0


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        FeatureDriftConfig(method="cusum")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="kswin_stat_size"):
        FeatureDriftConfig(kswin_window=30, kswin_stat_size=30)
    with pytest.raises(ValueError, match="state version"):
        FeatureDriftDetector().load_state_dict({"version": 0})


def test_the_conformance_contract_holds_with_a_sensitive_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What tests/unit/test_detector_conformance.py checks, with the config it will need."""

    def fresh() -> FeatureDriftDetector:
        return FeatureDriftDetector(FeatureDriftConfig.model_validate(SENSITIVE))

    records = conformance.stream(1)
    assert conformance.run(fresh(), records)
    expected = conformance.comparable(conformance.run(fresh(), records))
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
