"""Conformance suite: every registered detector obeys the contract in detectors/base.py."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.registry import DETECTORS, DetectorSuiteConfig, create_detector
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = 1_790_000_000.0


def stream(seed: int, events: int = 6000, clients: int = 40) -> list[TelemetryRecord]:
    """Benign clients plus two bursty ones, with every optional field sometimes missing.

    From the second quarter on, half the bursty clients' feature vectors are sign steps
    (every feature moved by 0.1) of the other bursty client's last drawn vector for the same
    model, as in sybil extraction by Jacobian-based augmentation. The steps come from a
    second generator, so the rest of the stream stays what it was.
    """
    rng = random.Random(seed)
    steps = random.Random(-seed)
    drawn: dict[tuple[str, str], list[float]] = {}
    records = []
    ts = T0
    for index in range(events):
        ts += rng.expovariate(200.0)
        hot = index % 3 == 0
        client = rng.choice(["burst-a", "burst-b"]) if hot else f"c-{rng.randrange(clients)}"
        optional = {}
        if rng.random() < 0.5:
            optional["features"] = [rng.gauss(0, 1) for _ in range(4)]
        if rng.random() < 0.5:
            p = rng.random()
            optional["probabilities"] = [p, 1 - p]
        model_id = rng.choice(["m1", "m2"])
        if hot and "features" in optional:
            other = drawn.get((model_id, "burst-b" if client == "burst-a" else "burst-a"))
            drawn[(model_id, client)] = optional["features"]
            if other is not None and index >= events // 4 and steps.random() < 0.5:
                optional["features"] = [v + steps.choice((-0.1, 0.1)) for v in other]
        records.append(
            TelemetryRecord(
                event_id=f"e{index}",
                timestamp=ts,
                model_id=model_id,
                model_version="1",
                client_id=client,
                prediction=rng.randrange(2),
                **optional,
            )
        )
    return records


def small_budget_suite() -> DetectorSuiteConfig:
    # Small windows and a loose false-alarm budget, so the short suite stream exercises every
    # detector's alerting path (the defaults are calibrated for production streams).
    windows = {"baseline_size": 200, "window_size": 100, "evaluate_every": 20, "close_after": 2}
    return DetectorSuiteConfig.model_validate(
        {
            "query_budget": {"rate_per_minute": 600, "burst": 50},
            "prediction_drift": {**windows, "expected_run_length_events": 200},
            "confidence_shift": {
                **windows,
                "expected_run_length_events": 50,
                "cusum_shift_sigmas": 0.5,
            },
            # The suite's i.i.d. Gaussian queries give Shapiro W of 0.92-0.94.
            "prada": {"delta": 0.95},
            "boundary_probing": {
                "warmup_events": 200,
                "null_ratio": 1.0,
                "alt_ratio": 1.5,
                "alpha": 0.2,
                "beta": 0.2,
                "quiet_seconds": 2,
                "idle_seconds": 2,
            },
            "class_coverage": {
                "window": 40,
                "min_queries": 10,
                "stride": 5,
                "min_population": 10,
                "population_memory": 100,
                "alpha": 0.2,
                "quiet_seconds": 2,
                "idle_seconds": 2,
            },
            "feature_drift": {
                "baseline_size": 100,
                "window_size": 50,
                "method": "page_hinkley",
                "ph_threshold": 2.0,
                "ph_delta": 0.0,
                "ph_min_instances": 5,
                "confirm_alpha": 0.2,
                "clear_alpha": 0.5,
                "sample_every": 1,
            },
            "mmd_drift": {
                "baseline_size": 100,
                "window_size": 50,
                "evaluate_every": 10,
                "expected_run_length_events": 50,
                "critical_run_length_events": 50,
                "permutations": 200,
                "clear_quantile": 0.9,
                "sample_every": 1,
            },
            "ood_queries": {
                "reference_size": 200,
                "outlier_quantile": 0.1,
                "null_ratio": 1.0,
                "alt_ratio": 2.0,
                "alpha": 0.2,
                "beta": 0.2,
                "coarse_components": 2,
                "quiet_seconds": 2,
                "idle_seconds": 2,
            },
            "sybil_steps": {
                "ring_size": 64,
                "candidates": 8,
                "reference_queries": 200,
                "min_clients": 2,
                "quiet_seconds": 2,
                "idle_seconds": 2,
            },
            "evasion_campaign": {
                "window_seconds": 2,
                "bucket_seconds": 0.5,
                "quiet_seconds": 2,
                "warmup_events": 200,
                "null_ratio": 1.0,
                "alpha": 0.2,
                "min_window_low": 5,
                "min_top_share": 0.3,
            },
        }
    )


def fresh(name: str) -> Detector:
    return create_detector(name, small_budget_suite())


def chunks(records: list[TelemetryRecord], size: int) -> Iterator[TelemetryBatch]:
    for start in range(0, len(records), size):
        yield TelemetryBatch(records[start : start + size])


def run(detector: Detector, records: list[TelemetryRecord], size: int = 500) -> list[Alert]:
    return [alert for batch in chunks(records, size) for alert in detector.update(batch)]


def comparable(alerts: list[Alert]) -> list[str]:
    return [alert.model_dump_json() for alert in alerts]


names = pytest.mark.parametrize("name", sorted(DETECTORS))


def test_every_detector_has_a_config_field_and_a_kind() -> None:
    for name, detector_class in DETECTORS.items():
        assert detector_class.name == name
        assert name in DetectorSuiteConfig.model_fields
        assert detector_class.kind is not None


@names
def test_the_suite_stream_makes_each_detector_fire(name: str) -> None:
    # Otherwise the checks below would pass vacuously on a detector that never alerts.
    assert run(fresh(name), stream(1))


@names
def test_replay_gives_identical_alerts(name: str) -> None:
    records = stream(2)
    assert comparable(run(fresh(name), records)) == comparable(run(fresh(name), records))


@names
def test_batch_size_does_not_change_alerts(name: str) -> None:
    records = stream(3)
    per_event = comparable(run(fresh(name), records, size=1))
    assert comparable(run(fresh(name), records, size=777)) == per_event
    assert comparable(run(fresh(name), records, size=len(records))) == per_event


@names
def test_state_round_trip_resumes_exactly(name: str) -> None:
    records = stream(4)
    head, tail = records[:3000], records[3000:]
    uninterrupted = fresh(name)
    run(uninterrupted, head)
    expected = comparable(run(uninterrupted, tail))

    first = fresh(name)
    run(first, head)
    saved = json.loads(json.dumps(first.state_dict()))  # must survive JSON (a Kafka changelog)
    resumed = fresh(name)
    resumed.load_state_dict(saved)
    assert comparable(run(resumed, tail)) == expected


@names
def test_no_wall_clock_reads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden() -> float:
        raise AssertionError("detectors must read time from events only")

    monkeypatch.setattr(time, "time", forbidden)
    monkeypatch.setattr(time, "monotonic", forbidden)
    run(fresh(name), stream(5))


@names
def test_minimal_records_are_handled(name: str) -> None:
    bare = [
        TelemetryRecord(
            event_id=f"e{i}",
            timestamp=T0 + i / 1000,
            model_id="m",
            model_version="1",
            client_id="c",
            prediction=0,
        )
        for i in range(500)
    ]
    run(fresh(name), bare)


@names
def test_memory_is_bounded_by_activity_not_by_clients_ever_seen(name: str) -> None:
    detector = fresh(name)
    # 20,000 one-off clients, one query each, spread over a long time.
    records = [
        TelemetryRecord(
            event_id=f"e{i}",
            timestamp=T0 + i,
            model_id="m",
            model_version="1",
            client_id=f"one-off-{i}",
            prediction=0,
        )
        for i in range(20_000)
    ]
    run(detector, records, size=1000)
    state_bytes = len(json.dumps(detector.state_dict()))
    assert state_bytes < 200_000, f"{name} keeps {state_bytes} bytes of state for idle clients"
