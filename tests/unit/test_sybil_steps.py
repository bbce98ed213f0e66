"""sybil_steps: sign steps of other accounts' queries, pooled over a model version."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.sybil_steps import SybilStepsConfig, SybilStepsDetector, find_step_twin
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0
DIM = 32
SMALL = SybilStepsConfig(ring_size=256, candidates=16, reference_queries=500)


def record(index: int, client: str, features: np.ndarray, version: str = "1") -> TelemetryRecord:
    return TelemetryRecord(
        event_id=f"e{index}",
        timestamp=T0 + index * 0.05,
        model_id="m",
        model_version=version,
        client_id=client,
        features=[round(float(v), 4) for v in features],
        prediction=0,
    )


def natural(rng: np.random.Generator) -> np.ndarray:
    """A 'natural' input: smooth values in [0, 1] that differ by varied amounts everywhere."""
    return np.clip(rng.beta(2.0, 5.0, size=DIM) + rng.normal(0.0, 0.05, size=DIM), 0.0, 1.0)


def traffic(
    seed: int,
    events: int,
    *,
    attackers: int = 0,
    attack_from: int = 0,
    every: int = 4,
    step: float = 0.1,
) -> list[TelemetryRecord]:
    """Benign clients; from `attack_from`, one query in `every` comes from a ring of
    `attackers` accounts, each a sign step of the ring's earlier queries (Jacobian-based
    augmentation dealt out round-robin)."""
    rng = np.random.default_rng(seed)
    sent: list[np.ndarray] = []
    records = []
    for index in range(events):
        if attackers and index >= attack_from and index % every == 0:
            account = f"sybil-{len(sent) % attackers}"
            if len(sent) < 20:
                x = natural(rng)  # the seed set: natural inputs
            else:
                parent = sent[-int(rng.integers(1, 20))]
                x = np.clip(parent + step * rng.choice((-1.0, 1.0), size=DIM), 0.0, 1.0)
            sent.append(x)
            records.append(record(index, account, x))
        else:
            records.append(record(index, f"user-{int(rng.integers(60))}", natural(rng)))
    return records


def run(detector: SybilStepsDetector, records: list[TelemetryRecord]) -> list[Alert]:
    return [
        a
        for i in range(0, len(records), 400)
        for a in detector.update(TelemetryBatch(records[i : i + 400]))
    ]


def test_a_ring_of_accounts_stepping_each_others_queries_is_one_sybil_alert() -> None:
    records = traffic(1, 4_000, attackers=12, attack_from=2_000)
    alerts = run(SybilStepsDetector(SMALL), records)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind is AlertKind.EXTRACTION
    assert alert.labels == {"pattern": "sybil"}
    listed = alert.evidence["client_ids"]
    assert len(listed) >= SMALL.min_clients
    assert all(client.startswith("sybil-") for client in listed)
    assert alert.client_id == listed[0]
    assert alert.evidence["value"] >= alert.evidence["threshold"]
    assert abs(alert.evidence["last_step_magnitude"] - 0.1) < 1e-3
    attack_queries = sum(
        1
        for r in records
        if r.client_id.startswith("sybil-") and r.timestamp <= alert.detected_at.timestamp()
    )
    assert attack_queries <= 60  # 20 natural seeds, then a few dozen steps


def test_benign_traffic_and_the_reference_period_raise_nothing() -> None:
    assert run(SybilStepsDetector(SMALL), traffic(2, 6_000)) == []
    # The ring attacks before the version's reference is learnt: nobody is tested yet.
    early = traffic(3, 700, attackers=12, attack_from=0)
    assert run(SybilStepsDetector(SMALL), early) == []


def test_one_account_stepping_its_own_queries_is_not_a_ring() -> None:
    records = traffic(4, 4_000, attackers=1, attack_from=2_000)
    assert run(SybilStepsDetector(SMALL), records) == []


def test_two_accounts_are_not_a_ring() -> None:
    records = traffic(5, 4_000, attackers=2, attack_from=2_000)
    assert run(SybilStepsDetector(SMALL), records) == []
    two = SmallWith(min_clients=2)
    assert len(run(SybilStepsDetector(two), records)) == 1


def SmallWith(**changes: object) -> SybilStepsConfig:  # noqa: N802 - reads like the config
    return SybilStepsConfig.model_validate({**SMALL.model_dump(), **changes})


def test_one_hot_inputs_learn_a_high_step_rate_and_stay_quiet() -> None:
    # Different users' one-hot inputs differ by exactly 1 in two coordinates: sign steps by
    # the letter. The version's reference rate is then high and the test has no false alarm.
    rng = np.random.default_rng(6)
    records = []
    for index in range(5_000):
        x = np.zeros(DIM)
        x[rng.choice(DIM, size=8, replace=False)] = 1.0
        records.append(record(index, f"user-{int(rng.integers(60))}", x))
    detector = SybilStepsDetector(SmallWith(min_step_coordinates=2))
    assert run(detector, records) == []
    ((_, _, ring),) = detector._rings.items()
    assert ring.reference[1] / ring.reference[0] > 0.1


def test_a_new_version_learns_its_own_reference() -> None:
    records = traffic(7, 4_000, attackers=12, attack_from=2_000)
    moved = [
        r.model_copy(update={"model_version": "2"}) if i >= 1_500 else r
        for i, r in enumerate(records)
    ]
    config = SmallWith(reference_queries=2_000)
    (same_version,) = run(SybilStepsDetector(config), records)
    assert same_version.detected_at.timestamp() < records[2_500].timestamp
    # Version 2 fills its ring and learns its reference from event 1,500 to about 3,750;
    # nobody is tested on it before then.
    alerts = run(SybilStepsDetector(config), moved)
    assert all(a.detected_at.timestamp() > records[3_700].timestamp for a in alerts)


def test_the_incident_alerts_once_and_reopens_after_a_quiet_period() -> None:
    first = traffic(8, 4_000, attackers=12, attack_from=2_000)
    detector = SybilStepsDetector(SmallWith(quiet_seconds=30.0))
    assert len(run(detector, first)) == 1
    rng = np.random.default_rng(9)
    quiet = [record(4_000 + i, f"user-{int(rng.integers(60))}", natural(rng)) for i in range(2_000)]
    assert run(detector, quiet) == []
    again = [
        r.model_copy(update={"event_id": f"again-{i}", "timestamp": r.timestamp + 300.0})
        for i, r in enumerate(first[2_000:])
    ]
    reopened = run(detector, again)
    assert len(reopened) == 1
    assert reopened[0].fingerprint != run(SybilStepsDetector(SMALL), first)[0].fingerprint


def test_state_survives_json_mid_attack() -> None:
    records = traffic(10, 4_000, attackers=12, attack_from=1_500)
    whole = run(SybilStepsDetector(SMALL), records)
    head = SybilStepsDetector(SMALL)
    run(head, records[:1_520])
    resumed = SybilStepsDetector(SMALL)
    resumed.load_state_dict(json.loads(json.dumps(head.state_dict())))
    assert [a.model_dump() for a in run(resumed, records[1_520:])] == [
        a.model_dump() for a in whole
    ]


@settings(max_examples=200, deadline=None)
@given(
    base=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=64),
    step=st.floats(0.01, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_sign_step_of_any_input_is_found(base: list[float], step: float, seed: int) -> None:
    x = np.asarray(base, dtype=np.float32)
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=x.shape[0])
    stepped = (x + step * signs).astype(np.float32)  # unclipped: every coordinate moves
    assert find_step_twin(stepped, x[None, :], SybilStepsConfig()) == 0


@settings(max_examples=200, deadline=None)
@given(
    base=st.lists(st.floats(0.0, 1.0), min_size=16, max_size=64),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_continuous_perturbation_is_not_a_sign_step(base: list[float], seed: int) -> None:
    x = np.asarray(base, dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, 0.1, size=x.shape[0])
    assert find_step_twin((x + noise).astype(np.float32), x[None, :], SybilStepsConfig()) is None
