"""Boundary probing: Wald SPRT arithmetic against scipy, detection delay, benign silence,
one alert per incident, state round trip and batch-size invariance."""

from __future__ import annotations

import json
import math
import random

import pytest
from scipy import stats

from mlwarden.detectors.boundary_probing import BoundaryProbingConfig, BoundaryProbingDetector
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.behaviour_streams import (
    AUGMENTATION,
    EXTRACTION,
    HOPSKIPJUMP,
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

ORDINARY = Profile(UNIFORM, 0.05)


Scenario = tuple[dict[str, list[TelemetryRecord]], list[Alert]]


_LOW = (0.42, 0.40, *[0.0225] * 8)  # margin 0.02
_CONFIDENT = (0.90, 0.05, *[0.00625] * 8)  # margin 0.85


def query(index: int, client: str, low: bool, ts: float) -> TelemetryRecord:
    return TelemetryRecord(
        event_id=f"{client}-{index}",
        timestamp=ts,
        model_id="m",
        model_version="1",
        client_id=client,
        probabilities=list(_LOW if low else _CONFIDENT),
        prediction=0,
    )


def confident_warmup(events: int = 2_000) -> list[TelemetryRecord]:
    """A population that is never near the boundary: p0 sits on `min_population_rate`."""
    return [query(i, f"w{i % 50}", False, T0 + i * 0.01) for i in range(events)]


def test_wald_boundaries_come_from_the_error_rates() -> None:
    det = BoundaryProbingDetector(BoundaryProbingConfig(alpha=1e-4, beta=0.05))
    assert det.sprt.log_a == pytest.approx(math.log(0.95 / 1e-4))
    assert det.sprt.log_b == pytest.approx(math.log(0.05 / (1 - 1e-4)))


def test_log_likelihood_ratio_is_the_binomial_one_and_alarms_at_the_first_crossing() -> None:
    # p0 pinned at min_population_rate 0.05 -> H0 rate 0.10, H1 rate 0.30 (defaults 2x, 6x).
    det = BoundaryProbingDetector(BoundaryProbingConfig(min_population_rate=0.05))
    run(det, confident_warmup())
    assert det.hypotheses("m") == pytest.approx((0.05, 0.10, 0.30))
    pattern = [True, True, False, True, True, True, False, True] * 4  # never crosses B
    probe = [query(i, "p", low, T0 + 100 + i) for i, low in enumerate(pattern)]
    # Expected crossing from scipy: log Bin(k; n, 0.3) - log Bin(k; n, 0.1) >= log A.
    log_a = math.log((1 - 0.01) / 1e-6)
    llrs = [
        stats.binom.logpmf(k, n, 0.3) - stats.binom.logpmf(k, n, 0.1)
        for n, k in ((n, sum(pattern[:n])) for n in range(1, len(pattern) + 1))
    ]
    crossing = next(n for n, llr in enumerate(llrs, start=1) if llr >= log_a)
    [alert] = run(det, probe, size=1)
    assert alert.evidence["queries_in_test"] == crossing
    assert alert.evidence["low_margin_in_test"] == sum(pattern[:crossing])
    assert alert.score == pytest.approx(llrs[crossing - 1], abs=1e-6)
    assert alert.threshold == pytest.approx(log_a, abs=1e-6)
    assert alert.detected_at.timestamp() == probe[crossing - 1].timestamp


def test_false_alarm_rate_per_test_is_bounded_by_alpha() -> None:
    # alpha = 0.02 is large enough to measure: 300 clients at the H0 rate (0.10), 60 queries
    # each. Wald: P(alarm) <= alpha / (1 - beta) per test, and a test that accepts H0 lasts
    # at least ceil(|log B| / |log(0.7/0.9)|) queries, which bounds the tests per client.
    cfg = BoundaryProbingConfig(min_population_rate=0.05, alpha=0.02, beta=0.1)
    det = BoundaryProbingDetector(cfg)
    run(det, confident_warmup())
    rng = random.Random(5)
    records = [
        query(i, f"c{c}", rng.random() < 0.10, T0 + 100 + i * 0.001)
        for i in range(60)
        for c in range(300)
    ]
    alarms = len(run(det, records))
    shortest_test = math.ceil(-det.sprt.log_b / -math.log(0.7 / 0.9))
    assert 0 < alarms <= 0.02 / 0.9 * 300 * (60 // shortest_test + 1)


@pytest.fixture(scope="module")
def scenario() -> tuple[dict[str, list[TelemetryRecord]], list[Alert]]:
    """The full benign stream with attackers and special clients from event 50k on, run once.

    `x` probes, behaves for 1,000 s (past `quiet_seconds`), then probes again: two incidents.
    `plain` queries every class with a 15% low-margin rate (2x the population's, but below
    the H0 rate): an unusual client, not a prober.
    """
    start = attack_start()
    clients = attackers((("hsj", HOPSKIPJUMP), ("augment", AUGMENTATION)), 4, start)
    clients["plain"] = attacker(1, "plain", EXTRACTION, 300, start)
    clients["x"] = merged(
        attacker(1, "x", HOPSKIPJUMP, 150, start),
        attacker(2, "x", ORDINARY, 100, start + 200, per_second=0.1),
        attacker(3, "x", HOPSKIPJUMP, 100, start + 1_300),
    )
    return clients, run(
        BoundaryProbingDetector(), merged(list(benign_traffic()), *clients.values())
    )


def test_boundary_attacks_are_found_within_200_queries(scenario: Scenario) -> None:
    clients, alerts = scenario
    # One each; no benign client, not `plain`.
    for alert, queries in flagged_attackers(alerts, clients, ("hsj", "augment"), "x"):
        assert queries_until(alert, queries) <= 200
        assert (alert.kind, alert.labels) == (AlertKind.EXTRACTION, {"pattern": "boundary_probing"})
        assert_opened_by(alert, "boundary_probing", queries)
        assert alert.evidence["client_low_margin_rate"] > alert.evidence["null_rate"]


def test_one_alert_per_incident_and_a_new_one_after_a_quiet_period(scenario: Scenario) -> None:
    _, alerts = scenario
    assert_two_incidents(alerts, "x", attack_start() + 1_300)


def test_long_benign_stream_raises_no_alarm() -> None:
    assert run(BoundaryProbingDetector(), benign_traffic()) == []


def test_records_without_probabilities_are_skipped() -> None:
    det = BoundaryProbingDetector()
    assert run(det, simple_records(1_000, client=lambda i: f"c{i}", prediction=lambda i: 1)) == []
    assert det.tracked_clients == 0


def test_idle_clients_expire_and_state_stays_small() -> None:
    det = BoundaryProbingDetector()
    one_offs = [query(i, f"one-off-{i}", i % 7 == 0, T0 + i) for i in range(20_000)]
    run(det, one_offs)
    assert det.tracked_clients <= det.config.idle_seconds + 1
    assert len(json.dumps(det.state_dict())) < 200_000


def test_flagged_clients_do_not_teach_the_population() -> None:
    det = BoundaryProbingDetector(BoundaryProbingConfig(min_population_rate=0.001))
    run(det, confident_warmup())
    assert run(det, [query(i, "p", True, T0 + 100 + i) for i in range(20)])  # flagged at 13
    before = det.hypotheses("m")[0]
    run(det, [query(i, "p", True, T0 + 200 + i) for i in range(10, 500)])
    assert det.hypotheses("m")[0] == before


def test_replay_batch_split_and_state_round_trip_give_identical_alerts() -> None:
    base = list(benign_traffic()[:10_000])
    probes = [
        attacker(seed, f"p{seed}", HOPSKIPJUMP, 120, base[3_000 + 2_000 * seed].timestamp)
        for seed in range(4)
    ]
    assert_conformant(BoundaryProbingDetector, merged(base, *probes))
