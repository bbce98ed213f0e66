"""Alerts and step contexts for paging tests: one incident, as the engine would hand it over."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from mlwarden.responders.base import StepContext
from mlwarden.schemas.alert import Alert, AlertKind, Severity

DETECTED = datetime(2026, 11, 23, 14, 5, tzinfo=UTC)


def make_alert(n: int = 1, **changes: Any) -> Alert:
    """The n-th alert of incident `fp-1`: a scraper querying fraud-scorer too fast."""
    fields: dict[str, Any] = {
        "alert_id": f"a-{n}",
        "fingerprint": "fp-1",
        "kind": AlertKind.EXTRACTION,
        "detector": "prada",
        "severity": Severity.CRITICAL,
        "model_id": "fraud-scorer",
        "model_version": "3",
        "client_id": "c-scraper-01",
        "detected_at": DETECTED + timedelta(minutes=n - 1),
        "emitted_at": DETECTED + timedelta(minutes=n - 1, seconds=1),
        "score": 0.97 + n / 1000,
        "threshold": 0.9,
        "summary": f"query distribution of c-scraper-01 looks synthetic (alert {n})",
    }
    return Alert(**(fields | changes))


def make_ctx(
    *alerts: Alert, key: str = "fp-1/extraction/1", timeout_s: float = 10.0
) -> StepContext:
    """The context of step `key` of incident fp-1, latest alert last."""
    chain = alerts or (make_alert(),)
    return StepContext(
        idempotency_key=key,
        incident_id="fp-1",
        playbook="extraction",
        alert=chain[-1],
        alerts=tuple(chain),
        deadline=time.monotonic() + timeout_s,
    )


def follow_up_ctx(change: str, *alerts: Alert, key: str = "fp-1/extraction/1") -> StepContext:
    """The context the engine gives a follow-up: the step's key plus `#<change>`."""
    return make_ctx(*alerts, key=f"{key}#{change}")
