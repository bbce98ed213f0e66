"""PRADA's learned thresholds: the fit per model version, precedence, rollouts, replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.prada import PradaConfig, PradaDetector, PradaLimits
from mlwarden.detectors.prada_calibration import ThresholdLearner, fit_thresholds, tail_threshold
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.extraction_streams import (
    T0,
    attack,
    attacker_index,
    benign,
    jacobian,
    merge,
    uniform,
)


def run(detector: PradaDetector, records: list[TelemetryRecord], size: int = 2000) -> list[Alert]:
    return [
        alert
        for start in range(0, len(records), size)
        for alert in detector.update(TelemetryBatch(records[start : start + size]))
    ]


def known_population(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lowest W and spread of n benign clients: log(1 − W) ~ N(−3.3, 0.35), log s ~ N(−1.5, 0.1)."""
    rng = np.random.default_rng(seed)
    return 1.0 - np.exp(rng.normal(-3.3, 0.35, n)), np.exp(rng.normal(-1.5, 0.1, n))


def feed(learner: ThresholdLearner, key: tuple[str, str], w: np.ndarray, s: np.ndarray) -> None:
    for i, (w_i, s_i) in enumerate(zip(w, s, strict=True)):
        ts = T0 + i
        learner.observe(key, f"c{i}", float(w_i), float(s_i), ts=ts, watermark=ts)


def test_a_version_learns_delta_from_its_first_clients_lowest_w() -> None:
    w, s = known_population(40)
    learner = ThresholdLearner(40, 1e-3, 3600, learn_spread=True)
    feed(learner, ("m", "1"), w[:39], s[:39])
    assert learner.limits(("m", "1")) is None
    assert learner.learning_clients(("m", "1")) == 39
    # A client's later, higher W changes nothing: its minimum is what counts.
    learner.observe(("m", "1"), "c0", 0.999, 0.9, ts=T0 + 39, watermark=T0 + 39)
    assert learner.learning_clients(("m", "1")) == 39
    learner.observe(("m", "1"), "c39", float(w[39]), float(s[39]), ts=T0 + 40, watermark=T0 + 40)
    learned = learner.limits(("m", "1"))
    assert learned is not None
    assert (learned.clients, learned.version) == (40, "1")
    assert (learned.delta, learned.min_relative_spread) == fit_thresholds(w, s, 1e-3)
    assert learned.delta == tail_threshold(w, 5e-4, upper=True)  # half the budget each
    # Near the population's own 0.05 % point, on the safe side: 1 − exp(−3.3 + 3.29·0.35).
    assert 0.83 < learned.delta < 1 - np.exp(-3.3 + 3.29 * 0.35) + 0.02
    assert 0.0 < learned.min_relative_spread < np.exp(-1.5 - 3.29 * 0.1) + 0.02
    assert learner.learning_clients(("m", "1")) == 0
    # By default only δ is learned, and it gets the whole false-alarm budget.
    delta_only = ThresholdLearner(40, 1e-3, 3600)
    feed(delta_only, ("m", "1"), w, s)
    alone = delta_only.limits(("m", "1"))
    assert alone is not None
    assert alone.min_relative_spread is None
    assert alone.delta == tail_threshold(w, 1e-3, upper=True) > learned.delta


def test_a_learning_version_borrows_the_models_latest_thresholds() -> None:
    w, s = known_population(40)
    learner = ThresholdLearner(clients=40, false_alarm_rate=1e-3, idle_seconds=3600)
    feed(learner, ("m", "1"), w, s)
    feed(learner, ("m", "2"), w[:5], s[:5])
    v1 = learner.limits(("m", "1"))
    assert learner.limits(("m", "2")) == v1  # v2 learning: v1's
    assert learner.limits(("other", "1")) is None  # another model learns its own
    w2, s2 = known_population(40, seed=1)
    feed(learner, ("m", "2"), w2, s2)
    v2 = learner.limits(("m", "2"))
    assert v2 is not None
    assert v2.version == "2"
    assert v2 != v1
    assert learner.limits(("m", "3")) == v2  # the latest frozen one


def test_a_learning_version_idle_too_long_starts_over() -> None:
    w, s = known_population(40)
    learner = ThresholdLearner(clients=40, false_alarm_rate=1e-3, idle_seconds=600)
    feed(learner, ("m", "1"), w[:30], s[:30])
    late = T0 + 30 + 601
    learner.observe(("m", "1"), "late", 0.95, 0.2, ts=late, watermark=late)
    assert learner.learning_clients(("m", "1")) == 1
    learner.expire(late + 601)  # the sweep drops what the next test would have reset
    assert learner.learning_clients(("m", "1")) == 0


def test_the_learner_survives_a_json_round_trip_mid_learning() -> None:
    w, s = known_population(40)
    whole = ThresholdLearner(40, 1e-3, 3600, learn_spread=True)
    feed(whole, ("m", "0"), w, s)
    feed(whole, ("m", "1"), w[:20], s[:20])
    saved = json.loads(json.dumps(whole.state_dict(), allow_nan=False))
    resumed = ThresholdLearner(40, 1e-3, 3600, learn_spread=True)
    resumed.load_state_dict(saved)
    for learner in (whole, resumed):
        for i in range(20, 40):
            ts = T0 + i
            learner.observe(("m", "1"), f"c{i}", float(w[i]), float(s[i]), ts=ts, watermark=ts)
    assert resumed.state_dict() == whole.state_dict()
    assert resumed.limits(("m", "1")) == whole.limits(("m", "1")) is not None


# --- the detector ---------------------------------------------------------------------------


def benign_then_jacobian() -> tuple[list[TelemetryRecord], list[TelemetryRecord]]:
    """60 benign clients over ~40 min; a Jacobian extractor starts at minute 30."""
    calm = list(benign(5, 60))
    return calm, attack("jacobian", jacobian(10, 300), start=T0 + 1800, seed=0)


def test_defaults_learn_delta_raise_no_benign_alarm_and_catch_extraction() -> None:
    calm, extraction = benign_then_jacobian()
    detector = PradaDetector()
    alerts = run(detector, merge(calm, extraction))
    learned = detector.learned_limits("digits", "1")
    assert learned is not None
    assert learned.clients == 40
    assert learned.delta is not None
    assert 0.8 < learned.delta < 0.95
    assert [a.client_id for a in alerts] == ["jacobian"], [a.summary for a in alerts]
    alert = alerts[0]
    assert alert.evidence["delta_source"] == "learned"
    assert alert.evidence["delta"] == learned.delta == alert.threshold
    assert alert.evidence["learned_from"] == {"model_version": "1", "clients": 40}
    assert attacker_index(alert.evidence["sample_event_ids"][-1]) <= 200


def test_the_spread_floor_is_learned_only_when_asked() -> None:
    calm, _ = benign_then_jacobian()
    scraper = attack("uniform", uniform(11, 300), start=T0 + 1800, seed=1)
    by_default = PradaDetector()
    assert run(by_default, merge(calm, scraper)) == []  # W ≈ 0.98: the W test cannot see it
    asked = PradaDetector(PradaConfig(learn_spread_floor=True))
    alerts = run(asked, merge(calm, scraper))
    assert [a.client_id for a in alerts] == ["uniform"]
    evidence = alerts[0].evidence
    assert evidence["trigger"] == "distance_concentration"
    assert evidence["min_relative_spread_source"] == "learned"
    learned = asked.learned_limits("digits", "1")
    assert learned is not None
    assert evidence["min_relative_spread"] == learned.min_relative_spread > 0.1


def test_a_configured_delta_wins_over_the_learned_one() -> None:
    calm, extraction = benign_then_jacobian()
    off = PradaConfig(models={"digits": PradaLimits(delta=0.01, min_relative_spread=0.0)})
    detector = PradaDetector(off)
    assert run(detector, merge(calm, extraction)) == []
    assert detector.learned_limits("digits", "1") is not None  # learned, not used
    strict = PradaDetector(PradaConfig(delta=0.999))  # global δ: everyone fails
    assert {a.evidence["delta_source"] for a in run(strict, calm)} == {"configured"}


def test_before_a_model_has_learned_the_prior_applies() -> None:
    few = merge(list(benign(6, 5)), attack("jacobian", jacobian(10, 300)))
    detector = PradaDetector()
    alerts = run(detector, few)
    assert detector.learned_limits("digits", "1") is None  # 5 clients: still learning
    assert [a.client_id for a in alerts] == ["jacobian"]
    evidence = alerts[0].evidence
    assert evidence["delta_source"] == "prior"
    assert evidence["delta"] == 0.8
    assert evidence["min_relative_spread_source"] == "off"
    assert evidence["learned_from"] is None


def test_a_rollout_uses_the_previous_versions_thresholds_while_it_learns() -> None:
    calm, _ = benign_then_jacobian()
    extraction = attack("jacobian", jacobian(10, 300), start=T0 + 2700, seed=0)
    v2 = [r.model_copy(update={"model_version": "2"}) for r in extraction]
    detector = PradaDetector()
    alerts = run(detector, merge(calm, v2))
    assert [a.client_id for a in alerts] == ["jacobian"]
    assert alerts[0].model_version == "2"
    assert alerts[0].evidence["delta_source"] == "learned"
    assert alerts[0].evidence["learned_from"]["model_version"] == "1"


def small_calibration_stream() -> list[TelemetryRecord]:
    """24 benign clients, tested from about minute 9 on; an extractor from minute 25."""
    calm = list(benign(7, 24, lengths=(150, 250)))
    return merge(calm, attack("j", jacobian(3, 250), start=T0 + 1500))


@pytest.mark.parametrize("size", [1, 37, 10_000])
def test_learning_does_not_depend_on_batching(size: int) -> None:
    # The freeze point links clients, so it must be the same event however batches split.
    cfg = PradaConfig(calibration_clients=10)
    records = small_calibration_stream()
    expected = run(PradaDetector(cfg), records, size=500)
    assert [a.evidence["delta_source"] for a in expected] == ["learned"]
    assert run(PradaDetector(cfg), records, size=size) == expected


def test_state_round_trip_mid_learning_resumes_exactly() -> None:
    cfg = PradaConfig(calibration_clients=20)
    records = small_calibration_stream()
    middle = len(records) // 3
    whole = PradaDetector(cfg)
    expected = run(whole, records[:middle]) + run(whole, records[middle:])
    first = PradaDetector(cfg)
    head = run(first, records[:middle])
    assert first.learned_limits("digits", "1") is None  # the cut falls while learning
    resumed = PradaDetector(cfg)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    assert head + run(resumed, records[middle:]) == expected
    assert whole.learned_limits("digits", "1") == resumed.learned_limits("digits", "1")
    assert whole.learned_limits("digits", "1") is not None


def test_a_checkpoint_from_before_learned_thresholds_still_loads() -> None:
    records = small_calibration_stream()
    first = PradaDetector()
    run(first, records[:1000])
    old = {k: v for k, v in first.state_dict().items() if k != "thresholds"} | {"version": 1}
    resumed = PradaDetector()
    resumed.load_state_dict(json.loads(json.dumps(old)))
    assert resumed.tracked_clients == first.tracked_clients
    assert resumed.learned_limits("digits", "1") is None  # learns afresh
    with pytest.raises(ValueError, match="version 99"):
        resumed.load_state_dict(old | {"version": 99})
