"""Evasion campaign: a rise of low-margin predictions on a model, driven by a few clients.

Adversarial examples that flip a prediction usually land just across the boundary (minimal
perturbation, e.g. Carlini & Wagner 2017; decision-based attacks), so a campaign shows up as
more low-margin predictions. A model-wide rise alone is ambiguous (drift, a new input source);
a rise that a handful of clients account for is an attack. Both must hold:

1. Rate. Per model, low-margin predictions are counted in a sliding event-time window of
   `window_seconds` (buckets of `bucket_seconds`). The baseline rate p_b is an exponentially
   decayed rate (horizon `baseline_seconds`) of buckets that left the window while no incident
   was open, so a campaign never teaches the baseline. The window is tested against
   H0: p <= null_ratio x p_b with the Chernoff-Hoeffding bound on the binomial tail,
   P(X >= x) <= exp(-n * D(x/n || p)); alert when n*D >= log(1/alpha). The bound is
   conservative and the tolerance `null_ratio` absorbs benign overdispersion (heavy clients
   with their own rates), so alpha is a per-evaluation false-alarm bound, not a tuned knob.
2. Concentration. At most `top_k` clients, each one significantly above the null rate on
   its own, own at least `min_top_share` of the window's *excess* low-margin events,
   x - n * p_b. A client's excess is its low-margin count minus p_b times its queries, so a
   heavy but ordinary client owns none of it. Per-client counts are Space-Saving summaries
   (`low_margin_window`), `clients_per_bucket` counters a bucket, so memory per model is
   fixed; excess uses their guaranteed lower bounds, so a flood of one-off clients cannot
   fake it. A client counts only if its own low-margin events pass the same Chernoff bound
   against the same null rate at the same alpha. Its sample is what followed the event that
   opened each of its bucket counters (`LowMarginWindow.since_opening`): a counter opens on
   a low-margin event, so "1 of 1" is no evidence at all, and a benign client with one
   unlucky query is never named. Since a client is named only at an alert, the expected
   number of innocent clients an alert names is at most alpha x the clients tracked.

The alert is model-level: `client_id` is None and the fingerprint uses "*", because the
incident is the campaign, not one client — naming the top client would let a playbook limit
one of several attackers and call it done. `evidence.top_clients` lists the clients that the
concentration rule counted, with counts and their own statistic, and `sample_event_ids` come
from them only. `top_share_of_excess` is their excess over the window's, not capped: it can
exceed 1 when the rest of the traffic ran below the baseline, or because a client's excess
counts its queries only from its first low-margin event in each bucket (an upper bound).
Excess no client can be held to account for is left unnamed: a campaign's slower accounts
may not have enough queries in the window yet when the alert opens. One alert per campaign:
it stays open while the rate stays significant and closes at the first non-significant
evaluation `quiet_seconds` after the last significant one.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint, new_alert
from mlwarden.detectors.client_state import check_state_version
from mlwarden.detectors.columns import probability_vector
from mlwarden.detectors.low_margin_window import LowMarginWindow
from mlwarden.detectors.online import (
    binomial_tail_log_bound,
    close_if_quiet,
    is_low_margin,
    widened_rate,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_RECENT_LOW = 64
_SAMPLE_IDS = 5
_STATE_VERSION = 1


class EvasionCampaignConfig(BaseModel):
    """Window, baseline, the rate test's alpha and tolerance, the concentration rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low_margin: float = Field(default=0.1, gt=0, lt=1, description="top1 - top2 below this.")
    window_seconds: float = Field(default=60.0, gt=0)
    bucket_seconds: float = Field(default=5.0, gt=0)
    null_ratio: float = Field(default=1.25, ge=1, description="H0: rate <= this x baseline.")
    alpha: float = Field(default=1e-6, gt=0, lt=0.5, description="False alarms per test.")
    min_window_low: int = Field(default=30, ge=1, description="Low-margin events in window.")
    top_k: int = Field(default=3, ge=1, description="At most this many clients, each ...")
    min_top_share: float = Field(default=0.5, gt=0, le=1, description="... owning this share.")
    baseline_seconds: float = Field(default=21_600.0, gt=0, description="Baseline horizon.")
    warmup_events: int = Field(default=5_000, ge=1, description="Baseline events first.")
    min_baseline_rate: float = Field(default=0.01, gt=0, lt=0.5)
    clients_per_bucket: int = Field(default=64, ge=1, description="Space-Saving counters.")
    quiet_seconds: float = Field(default=600.0, gt=0)
    severity: Severity = Severity.WARNING

    @model_validator(mode="after")
    def _consistent(self) -> EvasionCampaignConfig:
        if self.bucket_seconds > self.window_seconds:
            raise ValueError("bucket_seconds must be <= window_seconds")
        if self.quiet_seconds < self.window_seconds:
            raise ValueError(
                "quiet_seconds must be >= window_seconds (campaign buckets must "
                "leave the window before the incident can close)"
            )
        return self


@dataclass(slots=True)
class _Model:
    window: LowMarginWindow = field(default_factory=LowMarginWindow)
    incident: list[Any] | None = None  # [fingerprint, opened_at, last_significant_ts]
    recent: deque[list[str]] = field(default_factory=lambda: deque(maxlen=_RECENT_LOW))


class EvasionCampaignDetector(Detector):
    """Alerts once per campaign: low-margin rate significantly up and owned by few clients."""

    name: ClassVar[str] = "evasion_campaign"
    kind: ClassVar[AlertKind] = AlertKind.EVASION
    config_model: ClassVar[type[BaseModel]] = EvasionCampaignConfig

    def __init__(self, config: EvasionCampaignConfig | None = None) -> None:
        self.config = config or EvasionCampaignConfig()
        self.span = math.ceil(self.config.window_seconds / self.config.bucket_seconds)
        self.log_inv_alpha = math.log(1.0 / self.config.alpha)
        self._models: dict[str, _Model] = {}
        self._watermark = float("-inf")

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._watermark = max(self._watermark, record.timestamp)
            probabilities = probability_vector(record)
            if probabilities is None:
                continue
            alert = self._observe(record, is_low_margin(probabilities, self.config.low_margin))
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _observe(self, record: TelemetryRecord, low: bool) -> Alert | None:
        cfg = self.config
        model = self._models.setdefault(record.model_id, _Model())
        current = math.floor(self._watermark / cfg.bucket_seconds)
        learn = model.incident is None  # a campaign never teaches the baseline
        model.window.expire(current - self.span, learn, cfg.bucket_seconds, cfg.baseline_seconds)
        index = math.floor(record.timestamp / cfg.bucket_seconds)
        if index <= current - self.span:
            return None  # later than the window: counts nowhere
        model.window.add(index, record.client_id, low, cfg.clients_per_bucket)
        if not low:
            return None
        model.recent.append([record.client_id, record.event_id])
        return self._evaluate(record, model)

    def baseline(self, model_id: str) -> float | None:
        """The model's baseline low-margin rate, or None while it is still warming up."""
        model = self._models.get(model_id)
        if model is None or model.window.base_events < self.config.warmup_events:
            return None
        window = model.window
        return max(self.config.min_baseline_rate, window.base_low / window.base_events)

    def _evaluate(self, record: TelemetryRecord, model: _Model) -> Alert | None:
        cfg, now, window = self.config, record.timestamp, model.window
        base = self.baseline(record.model_id)
        if base is None:
            return None
        null = widened_rate(base, cfg.null_ratio)
        statistic = 0.0
        if window.low >= cfg.min_window_low:
            statistic = binomial_tail_log_bound(window.low, window.events, null)
        if statistic < self.log_inv_alpha:
            close_if_quiet(model, now, cfg.quiet_seconds)
            return None
        if model.incident is not None:
            model.incident[2] = max(model.incident[2], now)
            return None
        top = self._accountable(window, base, null)
        total_excess = window.low - base * window.events  # > 0: the rate test passed
        share = sum(excess for _, excess, _ in top) / total_excess
        if share < cfg.min_top_share:
            return None
        fingerprint = incident_fingerprint(self.name, record.model_id, "*", record.event_id)
        model.incident = [fingerprint, now, now]
        return self._alert(record, model, base, null, statistic, top, total_excess)

    def _accountable(
        self, window: LowMarginWindow, base: float, null: float
    ) -> list[tuple[str, float, float]]:
        """(client, excess, its own statistic) for the `top_k` clients with the most excess
        among those whose own low-margin rate rejects the null at alpha."""
        observed = window.since_opening()
        significant = []
        for client, excess in window.excess(base).items():
            if excess <= 0.0:
                continue
            own = binomial_tail_log_bound(*observed[client], null)
            if own >= self.log_inv_alpha:
                significant.append((client, excess, own))
        return heapq.nlargest(self.config.top_k, significant, key=lambda c: (c[1], c[0]))

    def _alert(
        self,
        record: TelemetryRecord,
        model: _Model,
        base: float,
        null: float,
        statistic: float,
        top: list[tuple[str, float, float]],
        total_excess: float,
    ) -> Alert:
        assert model.incident is not None
        cfg, window = self.config, model.window
        rate = window.low / window.events
        listed_excess = sum(excess for _, excess, _ in top)
        share = listed_excess / total_excess
        names = {client for client, _, _ in top}
        samples = [event_id for client, event_id in model.recent if client in names]
        observed = window.since_opening()
        listed = ", ".join(f"{client} ({window.clients[client][0]})" for client, _, _ in top)
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=cfg.severity,
            fingerprint=model.incident[0],
            record=record,
            client_id=None,
            score=round(statistic, 6),
            threshold=round(self.log_inv_alpha, 6),
            summary=(
                f"model {record.model_id}: {window.low} of {window.events} predictions in the "
                f"last {cfg.window_seconds:g}s were low-margin ({rate:.1%} against a baseline "
                f"of {base:.1%}); {len(top)} client(s), each significantly above it, own "
                f"{listed_excess:.1f} of the window's {total_excess:.1f} low-margin events "
                f"above the baseline ({share:.0%}): {listed}"
            ),
            evidence={
                "statistic": "binomial_tail_log_bound",
                "value": round(statistic, 6),
                "threshold": round(self.log_inv_alpha, 6),
                "alpha": cfg.alpha,
                "window_seconds": cfg.window_seconds,
                "window_events": window.events,
                "window_low_margin": window.low,
                "window_low_margin_rate": round(rate, 6),
                "baseline_low_margin_rate": round(base, 6),
                "baseline_events": round(window.base_events, 3),
                "null_rate": round(null, 6),
                "low_margin_threshold": cfg.low_margin,
                "window_excess": round(total_excess, 3),
                "top_clients_excess": round(listed_excess, 3),
                "top_share_of_excess": round(share, 6),
                "min_top_share": cfg.min_top_share,
                "top_clients": [
                    {
                        "client_id": client,
                        "low_margin_events": window.clients[client][0] - window.clients[client][1],
                        "queries_tracked": window.clients[client][2],
                        "excess": round(excess, 3),
                        "low_margin_after_opening": observed[client][0],
                        "queries_after_opening": observed[client][1],
                        "value": round(own, 6),
                    }
                    for client, excess, own in top
                ],
                "opening_event_id": record.event_id,
                "sample_event_ids": samples[-_SAMPLE_IDS:],
            },
            labels={"pattern": "evasion_campaign"},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._watermark if math.isfinite(self._watermark) else None,
            "models": {
                model_id: {
                    **m.window.to_json(),
                    "incident": m.incident,
                    "recent": list(m.recent),
                }
                for model_id, m in self._models.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, _STATE_VERSION)
        watermark = state["watermark"]
        self._watermark = float("-inf") if watermark is None else float(watermark)
        self._models = {}
        for model_id, raw in state["models"].items():
            model = _Model(LowMarginWindow.from_json(raw), raw["incident"])
            model.recent.extend(raw["recent"])
            self._models[model_id] = model
