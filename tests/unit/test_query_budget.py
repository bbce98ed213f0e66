"""Query budget: token-bucket arithmetic, one alert per incident, per-model limits."""

from __future__ import annotations

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.query_budget import QueryBudgetConfig, QueryBudgetDetector
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from tests.unit.detector_helpers import T0


def queries(client: str, times: list[float], model: str = "m") -> list[TelemetryRecord]:
    return [
        TelemetryRecord(
            event_id=f"{client}-{model}-{t:.3f}-{i}",
            timestamp=T0 + t,
            model_id=model,
            model_version="7",
            client_id=client,
            prediction=0,
        )
        for i, t in enumerate(times)
    ]


def detector(**config: object) -> QueryBudgetDetector:
    return QueryBudgetDetector(QueryBudgetConfig.model_validate(config))


def test_burst_is_allowed_and_the_next_query_alerts() -> None:
    det = detector(rate_per_minute=60, burst=10, critical_factor=100)
    assert det.update(TelemetryBatch(queries("c", [0.0] * 10))) == []
    [alert] = det.update(TelemetryBatch(queries("c", [0.0])))
    assert (alert.kind, alert.severity) == (AlertKind.ABUSE, Severity.WARNING)
    assert (alert.client_id, alert.model_version) == ("c", "7")
    assert alert.threshold == 60
    assert alert.evidence["queries_in_window"] == 11
    assert alert.detected_at.timestamp() == T0


def test_sustained_rate_at_the_budget_never_alerts() -> None:
    det = detector(rate_per_minute=60, burst=2)
    assert det.update(TelemetryBatch(queries("c", [float(t) for t in range(600)]))) == []


def test_one_alert_per_incident_and_a_new_incident_after_refill() -> None:
    det = detector(rate_per_minute=60, burst=5)
    abuse = [i * 0.1 for i in range(100)]  # 10/s for 10 s against 1/s
    alerts = det.update(TelemetryBatch(queries("c", abuse)))
    assert len(alerts) == 1
    # 2 s later the bucket holds at most 3 of 5 tokens: still the same incident.
    assert det.update(TelemetryBatch(queries("c", [12.0 + i * 0.01 for i in range(10)]))) == []
    # After a full refill (5 s quiet), abuse again is a second incident.
    again = det.update(TelemetryBatch(queries("c", [30.0 + i * 0.01 for i in range(10)])))
    assert len(again) == 1
    assert again[0].fingerprint != alerts[0].fingerprint


def test_budgets_are_per_model_and_per_client() -> None:
    det = detector(rate_per_minute=60, burst=5, models={"llm": {"rate_per_minute": 6, "burst": 1}})
    burst = [0.0, 0.0]
    alerts = det.update(
        TelemetryBatch(
            queries("a", burst, model="llm")
            + queries("a", burst)
            + queries("b", burst, model="llm")
        )
    )
    assert sorted((a.model_id, a.client_id) for a in alerts) == [("llm", "a"), ("llm", "b")]


def test_fingerprint_is_stable_across_replays() -> None:
    records = queries("c", [0.0] * 20)
    first = detector(burst=5).update(TelemetryBatch(records))
    second = detector(burst=5).update(TelemetryBatch(records))
    assert [a.fingerprint for a in first] == [a.fingerprint for a in second]
    assert [a.alert_id for a in first] == [a.alert_id for a in second]


def test_idle_buckets_are_dropped() -> None:
    det = detector(rate_per_minute=60, burst=10)
    det.update(TelemetryBatch(queries("old", [0.0])))
    det.update(TelemetryBatch(queries("new", [11.0])))
    assert det.tracked_clients == 1


def test_an_incident_far_over_budget_is_critical() -> None:
    det = detector(rate_per_minute=60, burst=10, critical_factor=10)
    slow = det.update(TelemetryBatch(queries("slow", [i * 0.5 for i in range(40)])))
    fast = det.update(TelemetryBatch(queries("fast", [0.0] * 11 + [0.5] * 10)))
    assert [a.severity for a in slow] == [Severity.WARNING]
    assert [a.severity for a in fast] == [Severity.CRITICAL]
