"""Alert: what a detector says when a stream stops looking like its baseline.

Alerts are keyed on `mlwarden.alerts` by `fingerprint`, the dedup key of one incident: a detector
derives it only from the incident's identity (detector, model, client, the event that opened it),
so a replayed stream re-emits the same fingerprint and downstream dedup holds across restarts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class AlertKind(StrEnum):
    """What sort of trouble an alert reports; playbooks match on it."""

    DRIFT = "drift"
    CONFIDENCE_SHIFT = "confidence_shift"
    EXTRACTION = "extraction"
    ABUSE = "abuse"
    EVASION = "evasion"


class Severity(StrEnum):
    """info: for the record; warning: a ticket; critical: a human now."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(BaseModel):
    """One detector finding, with the numbers that tripped it in `evidence`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    alert_id: str = Field(description="Unique id of this alert; stable when a replay re-emits it.")
    fingerprint: str = Field(description="Dedup key of the incident this alert belongs to.")
    kind: AlertKind
    detector: str = Field(description="Registry name of the detector that fired.")
    severity: Severity
    model_id: str
    model_version: str
    client_id: str | None = Field(
        description="The offending client, or null for model-wide alerts."
    )
    detected_at: AwareDatetime = Field(description="Timestamp of the event that tripped the alert.")
    emitted_at: AwareDatetime = Field(description="Wall-clock time the alert left the pipeline.")
    score: float
    threshold: float
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    recent_telemetry: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The alert subject's (client's, or model's) latest raw telemetry records, "
        "newest last, attached by the stream worker from its bounded ring buffer so that "
        "evidence snapshots hold the queries themselves. Empty from backtest and detectors.",
    )
