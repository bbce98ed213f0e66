"""Class coverage: entropy and the empirical null against scipy/numpy, detection delay, benign
silence, calibration from the population, incidents, state round trip, batch invariance."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy import stats

from mlwarden.detectors.class_coverage import ClassCoverageConfig, ClassCoverageDetector
from mlwarden.detectors.coverage_null import LevelNull, normalised_entropy
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.behaviour_streams import (
    AUGMENTATION,
    EXTRACTION,
    UNIFORM,
    Profile,
    attack_start,
    attacker,
    attackers,
    benign_traffic,
    merged,
    queries_until,
)
from tests.unit.detector_helpers import (
    T0,
    assert_conformant,
    assert_opened_by,
    assert_two_incidents,
    flagged_attackers,
    run,
    simple_records,
)

Scenario = tuple[dict[str, list[TelemetryRecord]], list[Alert]]
FOCUSED = Profile((6.0, 3.0, 1.0, *[0.0] * 7), 0.05)  # an ordinary user: three classes


def test_normalised_entropy_matches_scipy() -> None:
    rng = random.Random(1)
    for _ in range(200):
        classes = rng.randrange(2, 20)
        counts = [rng.randrange(0, 30) for _ in range(classes)]
        if not sum(counts):
            continue
        expected = stats.entropy(counts) / math.log(classes)
        assert normalised_entropy(counts, sum(counts), classes) == pytest.approx(expected)


def test_null_quantiles_and_threshold_match_numpy_within_a_bin() -> None:
    rng = np.random.default_rng(2)
    h = rng.beta(4, 5, size=3_000)  # a plausible benign evenness distribution
    null = LevelNull()
    for value in h:
        null.add(LevelNull.transform(float(value)), memory=10_000)
    t = -np.log(1 - h)
    width = 9.22 / 369
    for q in (0.5, 0.9):
        assert null.quantile(q) == pytest.approx(np.quantile(t, q), abs=width)
    median, spread = null.fit(min_spread=0.0)
    z = stats.norm.isf(1e-6)
    assert spread == pytest.approx((np.quantile(t, 0.9) - median) / stats.norm.ppf(0.9), abs=width)
    assert null.threshold(z, 100, 0.0) == pytest.approx(median + z * spread)
    assert null.threshold(z, 3_001, 0.0) is None  # not calibrated yet


def test_null_forgets_by_halving() -> None:
    null = LevelNull()
    for i in range(1_001):
        null.add(1.0 + (i % 3) * 0.1, memory=1_000)
    assert null.total <= 1_000


def test_labels_past_max_classes_share_one_bin() -> None:
    cfg = ClassCoverageConfig(max_classes=4, window=10, min_queries=5, min_population=10)
    det = ClassCoverageDetector(cfg)
    run(det, simple_records(30, client=lambda i: "c", prediction=lambda i: f"label-{i % 7}"))
    [client] = det.state_dict()["clients"]
    assert max(client[4]) == 3  # indices 0..2 named, 3 = "(other)"
    assert det.state_dict()["models"]["m"][1] == 4  # K counts the "(other)" bin


def test_levels_double_from_min_queries_to_the_window() -> None:
    assert ClassCoverageConfig().levels == [50, 100, 200]
    assert ClassCoverageConfig(window=100, min_queries=30).levels == [30, 60, 100]


@pytest.fixture(scope="module")
def scenario() -> tuple[dict[str, list[TelemetryRecord]], list[Alert]]:
    """The full benign stream with attackers and special clients from event 50k on, run once.

    `fan` is a heavy ordinary user (600 queries on three classes). `x` extracts, behaves for
    800 s (past `quiet_seconds`), then extracts again: two incidents. `bare` extracts with
    predictions only (no probabilities).
    """
    start = attack_start()
    clients = attackers((("extract", EXTRACTION), ("augment", AUGMENTATION)), 3, start)
    clients["fan"] = attacker(4, "fan", FOCUSED, 600, start, per_second=2.0)
    clients["x"] = merged(
        attacker(1, "x", EXTRACTION, 300, start),
        attacker(2, "x", FOCUSED, 400, start + 310, per_second=0.5),
        attacker(3, "x", EXTRACTION, 200, start + 1_200),
    )
    clients["bare"] = [
        r.model_copy(update={"probabilities": None})
        for r in attacker(5, "bare", EXTRACTION, 200, start)
    ]
    stream = merged(list(benign_traffic()), *clients.values())
    return clients, run(ClassCoverageDetector(), stream)


def test_extraction_is_found_within_200_queries(scenario: Scenario) -> None:
    clients, alerts = scenario
    # One each; no benign client, not `fan`.
    for alert, queries in flagged_attackers(alerts, clients, ("extract", "augment", "bare"), "x"):
        assert queries_until(alert, queries) <= 200
        assert (alert.kind, alert.labels) == (AlertKind.EXTRACTION, {"pattern": "class_coverage"})
        assert_opened_by(alert, "class_coverage", queries)
        evidence = alert.evidence
        assert evidence["value"] > evidence["threshold"] > evidence["population_median"]
        assert sum(evidence["histogram"].values()) == evidence["window_queries"]
        assert evidence["classes"] == 10
        assert evidence["population_samples"] >= 100


def test_one_alert_per_incident_and_a_new_one_after_a_quiet_period(scenario: Scenario) -> None:
    _, alerts = scenario
    assert_two_incidents(alerts, "x", attack_start() + 1_200)


def test_long_benign_stream_raises_no_alarm() -> None:
    assert run(ClassCoverageDetector(), benign_traffic()) == []


def test_nothing_is_flagged_before_the_population_calibrates_the_threshold() -> None:
    # The threshold comes from other clients, not from a constant: alone, even a perfectly
    # uniform client is not judged.
    alone = attacker(1, "x", EXTRACTION, 400, T0)
    assert run(ClassCoverageDetector(), alone) == []


def test_idle_clients_expire_and_state_stays_small() -> None:
    det = ClassCoverageDetector()
    run(det, simple_records(20_000, prediction=lambda i: i % 10))
    assert det.tracked_clients <= det.config.idle_seconds + 1
    assert len(json.dumps(det.state_dict())) < 200_000


def test_replay_batch_split_and_state_round_trip_give_identical_alerts() -> None:
    cfg = ClassCoverageConfig(min_population=20, window=100, min_queries=25, stride=25)
    base = list(benign_traffic()[:20_000])
    spies = [
        attacker(seed, f"s{seed}", Profile(UNIFORM, 0.1), 120, base[8_000 + 3_000 * seed].timestamp)
        for seed in range(3)
    ]
    assert_conformant(lambda: ClassCoverageDetector(cfg), merged(base, *spies))
