"""Per-client query budget: a token bucket over event time, one per (model, client).

A client may spend `burst` queries at once and `rate_per_minute` sustained. The first query
past the budget opens an incident and raises one alert; the incident closes only when the
bucket has refilled completely (the client stayed under its rate for burst/rate seconds), so a
client hovering at the limit does not flap into a stream of alerts. Budgets are set per model:
an expensive LLM and a cheap fraud scorer do not share a sensible rate.

Memory is bounded by activity, not by the number of clients ever seen: a bucket that has had
time to refill carries no information and is dropped (a full bucket is the initial state).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint, new_alert
from mlwarden.detectors.client_state import check_state_version, drop_idle
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_STATE_VERSION = 1


class BudgetLimits(BaseModel):
    """A sustained rate and a burst allowance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_minute: float = Field(default=600.0, gt=0, description="Sustained queries/minute.")
    burst: int = Field(default=600, ge=1, description="Queries allowed at once (bucket size).")

    @property
    def rate_per_second(self) -> float:
        return self.rate_per_minute / 60.0

    @property
    def refill_seconds(self) -> float:
        """Time an empty bucket takes to become full: the quiet time that ends an incident."""
        return self.burst / self.rate_per_second


class QueryBudgetConfig(BudgetLimits):
    """Default limits plus per-model overrides (`models: {fraud-scorer: {rate_per_minute: 60}}`)."""

    severity: Severity = Severity.WARNING
    critical_factor: float = Field(
        default=10.0,
        gt=1.0,
        description="An incident opening at this multiple of the budget or more is critical: "
        "a scraper at 10x its rate needs a human now, a client slightly over it does not.",
    )
    models: dict[str, BudgetLimits] = Field(default_factory=dict)

    def limits_for(self, model_id: str) -> BudgetLimits:
        return self.models.get(model_id, self)


@dataclass(slots=True)
class _Incident:
    fingerprint: str
    opened_at: float
    over_budget: int = 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_ts: float
    run_start: float  # when the bucket was last full: start of the current spending run
    run_count: int = 0
    incident: _Incident | None = None
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))


class QueryBudgetDetector(Detector):
    """Alerts once per incident when a client spends more than its budget on one model."""

    name: ClassVar[str] = "query_budget"
    kind: ClassVar[AlertKind] = AlertKind.ABUSE
    config_model: ClassVar[type[BaseModel]] = QueryBudgetConfig

    def __init__(self, config: QueryBudgetConfig | None = None) -> None:
        self.config = config or QueryBudgetConfig()
        # Any bucket idle this long is full again, whatever model it is for.
        self._idle_horizon = max(
            [self.config.refill_seconds, *(m.refill_seconds for m in self.config.models.values())]
        )
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()  # oldest use first
        self._watermark = float("-inf")

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            alert = self._observe(record)
            if alert is not None:
                alerts.append(alert)
        self._expire_idle()
        return alerts

    def _observe(self, record: TelemetryRecord) -> Alert | None:
        limits = self.config.limits_for(record.model_id)
        key = (record.model_id, record.client_id)
        now = record.timestamp
        self._watermark = max(self._watermark, now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=float(limits.burst), last_ts=now, run_start=now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.last_ts)  # out-of-order events refill nothing
            bucket.tokens = min(
                float(limits.burst), bucket.tokens + elapsed * limits.rate_per_second
            )
            bucket.last_ts = max(bucket.last_ts, now)
            if bucket.tokens >= limits.burst:
                bucket.incident = None  # refilled: whatever happened before is over
                bucket.run_start, bucket.run_count = now, 0
        bucket.run_count += 1
        bucket.recent_ids.append(record.event_id)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if bucket.incident is not None:
            bucket.incident.over_budget += 1
            return None
        fingerprint = incident_fingerprint(
            self.name, record.model_id, record.client_id, record.event_id
        )
        bucket.incident = _Incident(fingerprint=fingerprint, opened_at=now)
        return self._alert(record, bucket, limits)

    def _alert(self, record: TelemetryRecord, bucket: _Bucket, limits: BudgetLimits) -> Alert:
        assert bucket.incident is not None
        elapsed = record.timestamp - bucket.run_start
        # A burst within one second is reported per second, not as an infinite rate.
        observed_per_minute = bucket.run_count / max(elapsed, 1.0) * 60.0
        critical = observed_per_minute >= self.config.critical_factor * limits.rate_per_minute
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=Severity.CRITICAL if critical else self.config.severity,
            fingerprint=bucket.incident.fingerprint,
            record=record,
            client_id=record.client_id,
            score=round(observed_per_minute, 3),
            threshold=limits.rate_per_minute,
            summary=(
                f"client {record.client_id} sent {bucket.run_count} queries to "
                f"{record.model_id} in {elapsed:.1f}s, over its budget of "
                f"{limits.rate_per_minute:g}/min with a burst of {limits.burst}"
            ),
            evidence={
                "statistic": "queries_per_minute",
                "queries_in_window": bucket.run_count,
                "window_seconds": round(elapsed, 3),
                "rate_per_minute": limits.rate_per_minute,
                "burst": limits.burst,
                "sample_event_ids": list(bucket.recent_ids),
            },
        )

    def _expire_idle(self) -> None:
        cutoff = self._watermark - self._idle_horizon
        drop_idle(self._buckets, cutoff, lambda bucket: bucket.last_ts, at_cutoff=True)

    @property
    def tracked_clients(self) -> int:
        """Buckets held in memory now (for memory measurements and tests)."""
        return len(self._buckets)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._watermark if self._buckets else None,
            "buckets": [
                [
                    model_id,
                    client_id,
                    b.tokens,
                    b.last_ts,
                    b.run_start,
                    b.run_count,
                    None
                    if b.incident is None
                    else [b.incident.fingerprint, b.incident.opened_at, b.incident.over_budget],
                    list(b.recent_ids),
                ]
                for (model_id, client_id), b in self._buckets.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, _STATE_VERSION)
        self._buckets.clear()
        watermark = state["watermark"]
        self._watermark = float("-inf") if watermark is None else float(watermark)
        for model_id, client_id, tokens, last_ts, run_start, run_count, inc, ids in state[
            "buckets"
        ]:
            self._buckets[(model_id, client_id)] = _Bucket(
                tokens=tokens,
                last_ts=last_ts,
                run_start=run_start,
                run_count=run_count,
                incident=None if inc is None else _Incident(inc[0], inc[1], inc[2]),
                recent_ids=deque(ids, maxlen=_SAMPLE_IDS),
            )
