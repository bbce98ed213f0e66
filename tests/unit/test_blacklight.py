"""Blacklight: fingerprints, near-duplicate clients, sybil rings, input-hash mode, replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlwarden.detectors.base import incident_fingerprint
from mlwarden.detectors.blacklight import BlacklightConfig, BlacklightDetector
from mlwarden.detectors.fingerprint import Fingerprinter
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.detector_helpers import run, simple_records
from tests.unit.extraction_streams import (
    T0,
    attack,
    attacker_index,
    benign,
    boundary_walk,
    campaigns,
    digits,
    merge,
    sybil,
)


def paper_fingerprinter(seed: int = 666) -> Fingerprinter:
    return Fingerprinter(low=0.0, high=1.0, step=50 / 255, window=20, top_n=50, salt_seed=seed)


def hashed(client: str, hashes: list[str], start: float) -> list[TelemetryRecord]:
    return [
        TelemetryRecord(
            event_id=f"{client}-q-{i}",
            timestamp=start + i,
            model_id="digits",
            model_version="1",
            client_id=client,
            input_hash=value,
            prediction=0,
        )
        for i, value in enumerate(hashes)
    ]


def test_fingerprints_are_deterministic_salted_and_survive_small_noise() -> None:
    queries = digits().test[:40]
    prints = paper_fingerprinter().features(queries)
    assert prints == paper_fingerprinter().features(queries.copy())
    assert paper_fingerprinter().features(queries[:7]) == prints[:7]  # batch-independent
    assert all(len(p) == 64 - 20 + 1 for p in prints)  # every window, all distinct
    assert all(p == sorted(p, reverse=True) for p in prints)
    other_salt = paper_fingerprinter(seed=7).features(queries)
    assert not set(prints[0]) & set(other_salt[0])
    levels = paper_fingerprinter().levels(queries)
    assert levels.min() >= 0
    assert levels.max() <= 5  # 0..255 in steps of 50, as the paper
    noise = np.random.default_rng(0).normal(0, 0.002, queries.shape)
    noisy = paper_fingerprinter().features(np.clip(queries + noise, 0, 1))
    shared = [len(set(a) & set(b)) for a, b in zip(prints, noisy, strict=True)]
    assert np.median(shared) >= 25
    distinct = [len(set(prints[0]) & set(p)) for p in prints[1:]]
    assert max(distinct) < 23  # different digits do not match
    assert len(paper_fingerprinter().features(np.full((1, 4), 0.5))[0]) == 1
    key = paper_fingerprinter().input_hash("sha256:abc")
    assert (
        key
        == paper_fingerprinter().input_hash("sha256:abc")
        != paper_fingerprinter(1).input_hash("sha256:abc")
    )


def test_attacks_are_caught_within_200_queries_and_benign_clients_never() -> None:
    traffic = campaigns()
    records = merge(benign(2, 60), *traffic.values())
    alerts = run(BlacklightDetector(), records)
    clients = {a.client_id for a in alerts if a.labels["pattern"] == "near_duplicates"}
    # Uniform noise has no near-duplicates (PRADA catches it); no benign client alarms even
    # though benign clients keep sending images other clients sent before.
    assert clients == {"boundary_walk", "jacobian"}, [a.summary for a in alerts]
    to_detect = {
        a.client_id: attacker_index(a.evidence["sample_event_ids"][-1])
        for a in alerts
        if a.labels["pattern"] == "near_duplicates"
    }
    [ring] = [a for a in alerts if a.labels["pattern"] == "sybil"]  # one alert for the ring
    ring_times = sorted(r.timestamp for r in traffic["ring"])
    to_detect["ring (campaign queries)"] = sum(
        t <= ring.detected_at.timestamp() for t in ring_times
    )
    print("Blacklight queries to detect:", to_detect)
    assert all(n <= 200 for n in to_detect.values()), to_detect
    assert ring.kind is AlertKind.EXTRACTION
    assert ring.severity is Severity.CRITICAL
    assert ring.client_id is not None
    assert ring.client_id.startswith("ring-")
    assert ring.client_id in ring.evidence["client_ids"]
    assert len(ring.evidence["client_ids"]) >= 5
    assert all(c.startswith("ring-") for c in ring.evidence["client_ids"])
    identity = ring.evidence["cluster_identity"]
    assert ring.fingerprint == incident_fingerprint("blacklight", "digits", "sybil", identity)
    walk = next(a for a in alerts if a.client_id == "boundary_walk")
    opened = f"boundary_walk-q-{to_detect['boundary_walk'] - 1}"
    assert walk.fingerprint == incident_fingerprint("blacklight", "digits", "boundary_walk", opened)
    assert walk.evidence["mode"] == "features"
    assert walk.evidence["shared_needed"] == 23  # 25 of 50, scaled to 45 hashes


def test_input_hash_only_mode_catches_exact_repeats_and_says_so() -> None:
    replayer = hashed("replayer", [f"h{i % 5}" for i in range(40)], T0)
    ring = merge(*(hashed(f"ring-{k}", ["x", "y", "z"] * 3, T0 + k / 10) for k in range(8)))
    ordinary = merge(
        *(
            hashed(f"user-{k}", ["popular"] + [f"u{k}-{i}" for i in range(60)], T0)
            for k in range(40)
        )
    )
    alerts = run(BlacklightDetector(), merge(replayer, ring, ordinary))
    by_pattern = {a.labels["pattern"]: a for a in alerts}
    assert set(by_pattern) == {"near_duplicates", "sybil"}
    assert len(alerts) == 2
    assert by_pattern["near_duplicates"].client_id == "replayer"
    assert by_pattern["sybil"].evidence["participants"] >= 5
    for alert in alerts:
        assert alert.evidence["mode"] == "input_hash"
        assert "exact repeats" in alert.evidence["note"]


def test_one_alert_per_incident_and_another_after_a_quiet_period() -> None:
    queries = boundary_walk(21, 400)
    first = attack("w", queries[:300], start=T0)
    later = attack("w", queries[300:], start=first[-1].timestamp + 1200, seed=1)
    later = [r.model_copy(update={"event_id": f"w-late-{i}"}) for i, r in enumerate(later)]
    alerts = run(BlacklightDetector(BlacklightConfig(incident_quiet_seconds=600)), first + later)
    assert len(alerts) == 2
    assert alerts[0].fingerprint != alerts[1].fingerprint


def small_stream() -> list[TelemetryRecord]:
    ring = sybil("ring", boundary_walk(9, 200), 10, start=T0 + 50)
    return merge(benign(4, 6, lengths=(100, 150)), attack("walk", boundary_walk(8, 150)), ring)


@pytest.mark.parametrize(
    "config",
    [
        BlacklightConfig(),
        BlacklightConfig(max_queries_per_model=100, ttl_seconds=30, idle_seconds=60),
    ],
    ids=["defaults", "small-store-short-ttl"],  # the second forgets queries all the time
)
def test_batch_size_does_not_change_alerts(config: BlacklightConfig) -> None:
    records = small_stream()
    one_by_one = run(BlacklightDetector(config), records, size=1)
    assert {a.labels["pattern"] for a in one_by_one} == {"near_duplicates", "sybil"}
    for size in (37, len(records)):
        assert run(BlacklightDetector(config), records, size=size) == one_by_one


def test_state_round_trip_mid_stream_resumes_exactly() -> None:
    records = small_stream()
    middle = len(records) // 2
    whole = BlacklightDetector()
    expected = run(whole, records[:middle]) + run(whole, records[middle:])
    first = BlacklightDetector()
    head = run(first, records[:middle])
    saved = json.dumps(first.state_dict(), allow_nan=False)
    resumed = BlacklightDetector()
    resumed.load_state_dict(json.loads(saved))
    assert head + run(resumed, records[middle:]) == expected
    assert len(expected) >= 2


def test_memory_is_bounded_by_the_query_cap_and_time() -> None:
    config = BlacklightConfig(max_queries_per_model=500, ttl_seconds=600, idle_seconds=600)
    detector = BlacklightDetector(config)
    rng = np.random.default_rng(0)
    records = simple_records(3000, model="digits", features=lambda i: rng.random(64).tolist())
    run(detector, records, size=500)
    state = detector.state_dict()
    assert len(json.dumps(state)) < 500 * 45 * 8 * 4 / 3 + 120_000  # ≤ 500 queries' hashes
    assert detector.tracked_clients <= 601  # clients idle > idle_seconds are gone
    late = [records[0].model_copy(update={"timestamp": T0 + 10_000, "event_id": "late"})]
    run(detector, late)
    assert len(json.dumps(detector.state_dict())) < 5_000  # everything else expired
