"""OOD-query detector: natural digits are quiet; uniform noise (Tramèr et al. 2016) reads as
extraction, small sign perturbations of natural digits (FGSM-like) as evasion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_digits

from mlwarden.detectors.base import TelemetryBatch, incident_fingerprint
from mlwarden.detectors.ood_queries import OodQueriesConfig, OodQueriesDetector
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.detector_helpers import T0, assert_conformant, simple_records
from tests.unit.detector_helpers import run as run_detector

CONFIG = OodQueriesConfig(reference_size=1200)
DIGITS = load_digits().data / 16.0


def natural(rng: np.random.Generator, n: int) -> np.ndarray:
    """Digits with sensor noise and a cleaned background, as a benign client sends them."""
    x = DIGITS[rng.integers(0, len(DIGITS), n)] + rng.normal(0.0, 0.03, (n, 64))
    x[x < 0.03] = 0.0
    return np.round(np.clip(x, 0.0, 1.0), 4)


def attack(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "uniform":
        return np.round(rng.uniform(0.0, 1.0, (n, 64)), 4)
    signs = rng.choice([-1.0, 1.0], size=(n, 64))  # FGSM-like: x + eps * sign(...)
    return np.round(np.clip(natural(rng, n) + 0.3 * signs, 0.0, 1.0), 4)


def scenario(seed: int, attacker: str | None, events: int = 3000) -> list[TelemetryRecord]:
    """30 benign clients; from event 1500 on, one in four events comes from the attacker."""
    rng = np.random.default_rng(seed)
    benign, hostile = natural(rng, events), attack(attacker or "uniform", rng, events)
    records = []
    for i in range(events):
        evil = attacker is not None and i >= events // 2 and i % 4 == 0
        client = "attacker" if evil else f"c{rng.integers(30)}"
        features = (hostile if evil else benign)[i].tolist() if i % 10 != 7 else None
        records.append(digits_query(i, client, features))
    return records


def digits_query(index: int, client: str, features: list[float] | None) -> TelemetryRecord:
    """Query `index` of a scenario: one every 0.1 s."""
    return TelemetryRecord(
        event_id=f"e{index}",
        timestamp=T0 + index * 0.1,
        model_id="digits",
        model_version="1",
        client_id=client,
        prediction=0,
        features=features,
    )


def run(
    records: list[TelemetryRecord], size: int = 500, detector: OodQueriesDetector | None = None
) -> list[Alert]:
    return run_detector(detector or OodQueriesDetector(CONFIG), records, size)


def attacker_queries_until(records: list[TelemetryRecord], alert: Alert) -> int:
    at = alert.detected_at.timestamp()
    return sum(1 for r in records if r.client_id == "attacker" and r.timestamp <= at)


def test_natural_traffic_is_quiet() -> None:
    assert run(scenario(1, None)) == []


@pytest.mark.parametrize(("attacker", "kind"), [("uniform", "extraction"), ("fgsm", "evasion")])
def test_attacker_is_caught_once_with_the_right_kind(attacker: str, kind: str) -> None:
    records = scenario(3, attacker)
    alerts = run(records)
    assert len(alerts) == 1  # one alert per incident, although the attack goes on
    alert = alerts[0]
    assert alert.client_id == "attacker"
    assert alert.kind == AlertKind(kind)
    assert alert.labels["pattern"] == "ood_queries"
    assert attacker_queries_until(records, alert) <= 200
    evidence = alert.evidence
    assert evidence["statistic"] == "sprt_log_likelihood_ratio"
    assert evidence["value"] >= evidence["threshold"]
    assert evidence["population_quantile"] == pytest.approx(0.99)
    assert evidence["outlier_score_threshold"] > 0
    assert evidence["sample_event_ids"]
    assert alert.fingerprint == incident_fingerprint(
        "ood_queries", "digits", "attacker", evidence["opening_event_id"]
    )
    json.dumps(evidence, allow_nan=False)


def test_batch_split_and_state_round_trip_do_not_change_alerts() -> None:
    assert_conformant(lambda: OodQueriesDetector(CONFIG), scenario(4, "fgsm"))


def test_warm_up_caps_each_client_and_skips_odd_records() -> None:
    detector = OodQueriesDetector(OodQueriesConfig(reference_size=100, max_client_share=0.1))
    rng = np.random.default_rng(5)
    odd = simple_records(
        200,
        client=lambda i: "flood",
        features=lambda i: rng.uniform(0, 1, 4).tolist() if i % 2 else None,
    )
    assert detector.update(TelemetryBatch(odd)) == []
    rows = detector.state_dict()["references"][0][3]
    assert len(rows) == 10  # one client may fill at most a tenth of the reference


def test_config_rejects_an_empty_indifference_zone() -> None:
    with pytest.raises(ValidationError):
        OodQueriesConfig(null_ratio=5.0, alt_ratio=4.0)
    with pytest.raises(ValidationError):
        OodQueriesConfig(reference_size=20, neighbours=20)


def test_idle_clients_are_forgotten() -> None:
    config = OodQueriesConfig(reference_size=100, quiet_seconds=30, idle_seconds=60)
    detector = OodQueriesDetector(config)
    run(scenario(6, None, events=400), detector=detector)
    assert detector.tracked_clients > 1
    late = TelemetryRecord(
        event_id="late",
        timestamp=T0 + 10_000,
        model_id="digits",
        model_version="1",
        client_id="new",
        prediction=0,
        features=[0.0] * 64,
    )
    detector.update(TelemetryBatch([late]))
    assert detector.tracked_clients == 1


def sybil_scenario(seed: int, accounts: int, events: int = 4000) -> list[TelemetryRecord]:
    """30 benign clients, established (beyond the pool's 20 queries) by event 2500; from then
    on, one event in four is uniform noise dealt round-robin over `accounts` new accounts (a
    sybil ring sending Tramèr et al.'s queries)."""
    rng = np.random.default_rng(seed)
    benign, hostile = natural(rng, events), attack("uniform", rng, events)
    records, sent = [], 0
    for i in range(events):
        evil = i >= 2500 and i % 4 == 0
        client = f"sybil-{sent % accounts}" if evil else f"c{rng.integers(30)}"
        sent += evil
        records.append(digits_query(i, client, (hostile if evil else benign)[i].tolist()))
    return records


def test_a_ring_of_low_volume_accounts_is_one_sybil_alert_before_any_account_alone() -> None:
    records = sybil_scenario(11, accounts=40)
    alerts = run(records)
    sybil = [a for a in alerts if a.labels.get("pattern") == "sybil"]
    assert len(sybil) == 1
    ring = sybil[0]
    assert ring.labels == {"pattern": "sybil", "variant": "ood_queries"}
    assert ring.kind is AlertKind.EXTRACTION
    assert len(ring.evidence["client_ids"]) >= CONFIG.cohort_min_clients
    assert all(c.startswith("sybil-") for c in ring.evidence["client_ids"])
    assert ring.client_id == ring.evidence["client_ids"][0]
    sent = sum(
        1
        for r in records
        if r.client_id.startswith("sybil-") and r.timestamp <= ring.detected_at.timestamp()
    )
    assert sent <= 20  # each account had sent one query or none: no per-account test could
    assert all(a.detected_at >= ring.detected_at for a in alerts if a is not ring)


def test_one_noisy_account_is_a_per_client_finding_not_a_ring() -> None:
    alerts = run(scenario(3, "uniform"))
    assert [a.labels["pattern"] for a in alerts] == ["ood_queries"]


def test_the_cohort_can_be_switched_off() -> None:
    records = sybil_scenario(11, accounts=40)
    off = OodQueriesDetector(CONFIG.model_copy(update={"cohort_max_queries": 0}))
    assert all(a.labels.get("pattern") != "sybil" for a in run(records, detector=off))


def test_state_saved_by_the_previous_version_still_loads() -> None:
    detector = OodQueriesDetector(CONFIG)
    run(scenario(5, "uniform")[:2000], detector=detector)
    state = json.loads(json.dumps(detector.state_dict()))
    state["version"] = 1  # version 1: no cohort per reference, no `seen` per client
    state["references"] = [row[:7] for row in state["references"]]
    state["clients"] = [row[:10] for row in state["clients"]]
    resumed = OodQueriesDetector(CONFIG)
    resumed.load_state_dict(state)
    assert resumed.tracked_clients == detector.tracked_clients
