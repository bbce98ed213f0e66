"""Evasion campaign: the binomial tail bound against scipy, detection delay, diffuse rises and
heavy ordinary clients left alone, Space-Saving bounds, state round trip, batch invariance."""

from __future__ import annotations

import json
import math
import random

import pytest
from scipy import special, stats

from mlwarden.detectors.base import incident_fingerprint
from mlwarden.detectors.evasion_campaign import EvasionCampaignConfig, EvasionCampaignDetector
from mlwarden.detectors.low_margin_window import LowMarginWindow
from mlwarden.detectors.online import bernoulli_kl, binomial_tail_log_bound, widened_rate
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.behaviour_streams import (
    Profile,
    attacker,
    benign,
    benign_traffic,
    merged,
    probabilities,
    queries_until,
)
from tests.unit.detector_helpers import assert_conformant, run, simple_records

EVADE = Profile((0, 0, 0, 1.0, 0, 0, 0, 1.0, 0, 0), 0.8)  # pushing inputs across two classes
Scenario = tuple[list[TelemetryRecord], list[TelemetryRecord], list[Alert]]


def test_kl_and_tail_bound_agree_with_scipy() -> None:
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randrange(20, 5_000)
        p = rng.uniform(0.01, 0.5)
        k = rng.randrange(0, n + 1)
        q = k / n
        expected_kl = special.rel_entr(q, p) + special.rel_entr(1 - q, 1 - p)
        assert bernoulli_kl(q, p) == pytest.approx(expected_kl, abs=1e-12)
        bound = binomial_tail_log_bound(k, n, p)
        if bound > 600:  # scipy's log tail underflows to -inf out there
            continue
        exact = -stats.binom.logsf(k - 1, n, p)  # -log P(X >= k)
        assert bound <= exact + 1e-9  # Chernoff: a true upper bound on the tail probability
        if q >= p + 0.05:  # and a tight one: within (1/2) log n + 1 nats (Bahadur-Rao)
            assert exact - bound <= 0.5 * math.log(n) + 1


def test_widened_rate_is_a_probability_between_the_rate_and_one() -> None:
    assert widened_rate(0.08, 1.25) == pytest.approx(0.1)
    for rate in (0.01, 0.3, 0.9):
        assert rate < widened_rate(rate, 1.25) < 1


def partition() -> list[TelemetryRecord]:
    """Every third benign query: one partition's share of the model, ~17 queries/s, 33 min.

    A model-level test sees a campaign only once it moves the partition's low-margin rate:
    here 3 clients at 1 query/s are 15% of the traffic. (A lone prober far below that share
    is boundary_probing's case.)
    """
    return list(benign_traffic()[::3])


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """A campaign of 3 clients at 1 query/s from minute 16; a second one after the first has
    been quiet for longer than `quiet_seconds`."""
    base = partition()
    first = base[16_000].timestamp
    campaign = merged(*(attacker(i, f"ev{i}", EVADE, 200, first) for i in range(3)))
    again = merged(*(attacker(9 + i, f"re{i}", EVADE, 150, first + 800) for i in range(3)))
    return campaign, again, run(EvasionCampaignDetector(), merged(base, campaign, again))


def test_a_campaign_is_found_within_200_of_its_queries(scenario: Scenario) -> None:
    campaign, _, alerts = scenario
    alert = alerts[0]
    assert queries_until(alert, campaign) <= 200
    assert (alert.kind, alert.client_id) == (AlertKind.EVASION, None)
    assert alert.labels == {"pattern": "evasion_campaign"}
    evidence = alert.evidence
    assert {c["client_id"] for c in evidence["top_clients"]} == {"ev0", "ev1", "ev2"}
    assert evidence["top_share_of_excess"] >= 0.5
    assert (
        evidence["window_low_margin_rate"]
        > evidence["null_rate"]
        > evidence["baseline_low_margin_rate"]
    )
    assert evidence["value"] >= evidence["threshold"] == pytest.approx(13.815511, abs=1e-6)
    assert set(evidence["sample_event_ids"]) <= {r.event_id for r in campaign}
    opening = alert.evidence["opening_event_id"]
    assert alert.fingerprint == incident_fingerprint("evasion_campaign", "m", "*", opening)


def test_one_alert_per_campaign_and_a_new_one_for_the_next(scenario: Scenario) -> None:
    _, again, alerts = scenario
    assert len(alerts) == 2
    assert alerts[0].fingerprint != alerts[1].fingerprint
    assert {c["client_id"] for c in alerts[1].evidence["top_clients"]} == {"re0", "re1", "re2"}
    assert queries_until(alerts[1], again) <= 200


def test_only_clients_significant_on_their_own_are_named() -> None:
    # Two evaders among benign users, of whom several have one low-margin query in the
    # window: `top_k` = 3 leaves room for a third name, and none of them may take it.
    base = partition()
    start = base[16_000].timestamp
    campaign = merged(*(attacker(20 + i, f"ev{i}", EVADE, 200, start) for i in range(2)))
    det = EvasionCampaignDetector()
    [alert] = run(det, merged(base, campaign))
    evidence = alert.evidence
    named = {c["client_id"] for c in evidence["top_clients"]}
    assert named == {"ev0", "ev1"}
    for client in evidence["top_clients"]:
        hits, trials = client["low_margin_after_opening"], client["queries_after_opening"]
        assert client["value"] == pytest.approx(
            binomial_tail_log_bound(hits, trials, evidence["null_rate"]), rel=1e-4
        )  # (null_rate is rounded to 6 decimals)
        assert client["value"] >= evidence["threshold"]
    attackers = {r.event_id for r in campaign if r.client_id in named}
    assert evidence["sample_event_ids"]
    assert set(evidence["sample_event_ids"]) <= attackers
    # The share is what it is, not capped at 1.
    share = evidence["top_clients_excess"] / evidence["window_excess"]
    assert evidence["top_share_of_excess"] == pytest.approx(share, abs=1e-5)
    assert f"{len(named)} client(s)" in alert.summary


def test_a_counter_opened_by_a_low_margin_event_is_no_evidence_of_one() -> None:
    window = LowMarginWindow()
    window.add(0, "once", True, capacity=4)  # one unlucky query: "1 of 1" ...
    for _ in range(3):
        window.add(0, "ev", True, capacity=4)
    window.add(0, "ev", False, capacity=4)
    window.add(1, "ev", True, capacity=4)
    window.add(1, "ev", True, capacity=4)
    assert window.since_opening() == {"once": (0, 0), "ev": (3, 4)}  # ... is nothing


def test_long_benign_stream_raises_no_alarm() -> None:
    assert run(EvasionCampaignDetector(), benign_traffic()) == []
    assert run(EvasionCampaignDetector(), partition()) == []


def test_a_diffuse_rise_is_not_a_campaign() -> None:
    # Every client's inputs get harder at once (drift, a new source): the rate doubles but no
    # few clients own it. That is another detector's business.
    rng = random.Random(4)
    records = list(benign_traffic()[:60_000])
    records[40_000:] = [
        r.model_copy(update={"probabilities": probabilities(rng, int(r.prediction), True)})
        if rng.random() < 0.1
        else r
        for r in records[40_000:]
    ]
    assert run(EvasionCampaignDetector(), records) == []


def test_a_heavy_ordinary_client_is_not_a_campaign() -> None:
    # One client sends as much as everyone else together at a slightly high 12% rate.
    base = list(benign_traffic()[:60_000])
    heavy = attacker(1, "heavy", Profile((1.0,) * 10, 0.12), 8_000, base[40_000].timestamp, 50.0)
    assert run(EvasionCampaignDetector(), merged(base, heavy)) == []


def test_space_saving_keeps_the_campaign_when_counters_overflow() -> None:
    # 8 counters per bucket against ~15 low-margin clients per bucket (benign, one-off noise
    # at 10 queries/s, the campaign): counters are recycled, yet the campaign's clients keep
    # theirs and top the guaranteed counts.
    base = partition()[:25_000]
    start = base[16_000].timestamp
    rng = random.Random(8)
    noise = [
        TelemetryRecord(
            event_id=f"n{i}",
            timestamp=start + i * 0.1,
            model_id="m",
            model_version="1",
            client_id=f"one-off-{i}",
            probabilities=probabilities(rng, i % 10, rng.random() < 0.08),
            prediction=i % 10,
        )
        for i in range(4_000)
    ]
    campaign = merged(*(attacker(i, f"ev{i}", EVADE, 200, start) for i in range(3)))
    det = EvasionCampaignDetector(EvasionCampaignConfig(clients_per_bucket=8))
    records = merged(base, noise, campaign)
    middle = next(i for i, r in enumerate(records) if r.timestamp > start + 30)
    alerts = run(det, records[:middle])
    [model] = det.state_dict()["models"].values()
    assert all(len(bucket[3]) <= 8 for bucket in model["buckets"])
    assert any(error > 0 for bucket in model["buckets"] for _, _, error, _ in bucket[3])
    [alert] = alerts + run(det, records[middle:])
    assert {c["client_id"] for c in alert.evidence["top_clients"]} == {"ev0", "ev1", "ev2"}
    assert queries_until(alert, campaign) <= 200


def test_records_without_probabilities_are_skipped() -> None:
    det = EvasionCampaignDetector()
    assert run(det, simple_records(5_000)) == []
    assert det.state_dict()["models"] == {}


def test_state_is_fixed_size_per_model() -> None:
    det = EvasionCampaignDetector()
    run(det, benign(5, 20_000, clients=20_000, per_second=200.0))  # mostly one-off clients
    state = det.state_dict()
    assert len(json.dumps(state)) < 200_000
    [model] = state["models"].values()
    assert len(model["buckets"]) <= 13


def test_replay_batch_split_and_state_round_trip_give_identical_alerts() -> None:
    cfg = EvasionCampaignConfig(warmup_events=2_000, quiet_seconds=60)
    base = partition()[:12_000]
    campaigns = [
        attacker(10 * s + i, f"c{s}-{i}", EVADE, 120, base[5_000 + 4_000 * s].timestamp)
        for s in range(2)
        for i in range(3)
    ]
    assert_conformant(lambda: EvasionCampaignDetector(cfg), merged(base, *campaigns))


def test_space_saving_bounds_hold_against_exact_counts() -> None:
    rng = random.Random(11)
    window = LowMarginWindow()
    exact: dict[str, int] = {}
    for _ in range(3_000):  # one bucket, Zipf-ish clients, 20 counters
        client = f"c{int(rng.paretovariate(1.0)) % 200}"
        low = rng.random() < 0.5
        window.add(0, client, low, capacity=20)
        exact[client] = exact.get(client, 0) + low
    for client, (count, error, _) in window.clients.items():
        assert count - error <= exact[client] <= count
    for client, true_count in exact.items():
        if true_count > window.low / 20:  # Space-Saving keeps every such heavy hitter
            assert client in window.clients
