"""Builders shared by the evidence tests (unit and integration); holds no tests itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from mlwarden.responders.base import StepContext
from mlwarden.schemas.alert import Alert, AlertKind, Severity

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def query_record(i: int, client: str = "acct-1", model: str = "fraud-scorer") -> dict[str, Any]:
    return {
        "event_id": f"{client}-evt-{i:04d}",
        "timestamp": T0.timestamp() - 600 + i * 1.5,
        "model_id": model,
        "model_version": "3",
        "client_id": client,
        "features": [0.5 * i, 1.0, 2.25],
        "probabilities": {"legit": 0.25, "fraud": 0.75},
        "prediction": i % 2,
        "latency_ms": 4.0,
        "attributes": {"route": "/v1/score", "source_ip": "10.0.0.7"},
    }


def make_alert(n: int = 1, client: str | None = "acct-1", **changes: Any) -> Alert:
    records = [query_record(i, client or "acct-9") for i in range(n * 5, n * 5 + 10)]
    fields: dict[str, Any] = {
        "alert_id": f"alert-{n}",
        "fingerprint": "fp-incident-1",
        "kind": AlertKind.EXTRACTION,
        "detector": "prada",
        "severity": Severity.CRITICAL,
        "model_id": "fraud-scorer",
        "model_version": "3",
        "client_id": client,
        "detected_at": T0 + timedelta(minutes=n),
        "emitted_at": T0 + timedelta(minutes=n, seconds=1),
        "score": 4.5 + n,
        "threshold": 3.0,
        "summary": "inter-query distances look synthetic (model extraction)",
        "evidence": {"shapiro_w": 0.81, "queries": 120, "ratio": 1.0},
        "labels": {"team": "fraud"},
        "recent_telemetry": records,
    }
    return Alert(**(fields | changes))


def make_context(
    *alerts: Alert, key: str = "fp-incident-1/extraction/snapshot", incident: str = "fp-incident-1"
) -> StepContext:
    return StepContext(
        idempotency_key=key,
        incident_id=incident,
        playbook="extraction",
        alert=alerts[-1],
        alerts=tuple(alerts),
        deadline=time.monotonic() + 30.0,
    )
