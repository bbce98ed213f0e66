"""Score a backtest's alerts against a simulated run's ground truth.

The rules, so that every benchmark and test counts the same way:

- A **detection** is an alert of one of the scenario's expected kinds, raised at or after the
  attack start, that points at the right thing: for client-scoped scenarios (extraction,
  probing, evasion) the alert names an attacking client — as `client_id`, or, for an alert
  about no single client (a sybil detector), anywhere in its evidence; for model-scoped
  scenarios (drift, a bad rollout) any alert of an expected kind counts.
- A **false alarm** is any other alert raised before the attack started (every alert of a
  benign control), or any other alert naming a client that is not an attacker.
- Everything else (say, a model-wide drift alert caused by an attacker's odd inputs) is
  counted under `other_alerts`: not wrong, not what the scenario is scored on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlwarden.schemas.alert import Alert
from mlwarden.streams.simulation.traffic import FloatArray, StrArray
from mlwarden.streams.simulation.truth import AlertScope, GroundTruth


@dataclass(frozen=True, slots=True)
class Score:
    """How one scenario went. Fields about detection are None for the benign controls."""

    detected: bool | None
    time_to_detect_s: float | None
    """Event time from the attack start to the first detecting alert."""
    exposed_events: int | None
    """Queries the attack got answered before that alert: the attackers' own (client scope),
    or all traffic since the start (model scope: every query was served by the bad state)."""
    first_detector: str | None
    false_alarms: int
    benign_events: int
    other_alerts: int
    alerts: int
    alerts_by_detector: dict[str, int]

    @property
    def false_alarms_per_100k(self) -> float:
        return 100_000.0 * self.false_alarms / max(self.benign_events, 1)


def is_detection(alert: Alert, truth: GroundTruth) -> bool:
    if truth.attack_start_ts is None or alert.kind not in truth.expected_alert_kinds:
        return False
    if alert.detected_at.timestamp() < truth.attack_start_ts:
        return False
    if truth.alert_scope is AlertScope.MODEL:
        return True
    attackers = set(truth.attacker_client_ids)
    if alert.client_id is not None:
        return alert.client_id in attackers
    evidence = json.dumps(alert.evidence, default=str)
    return any(client in evidence for client in attackers)


def is_false_alarm(alert: Alert, truth: GroundTruth) -> bool:
    if is_detection(alert, truth):
        return False
    if truth.attack_start_ts is None or alert.detected_at.timestamp() < truth.attack_start_ts:
        return True
    return alert.client_id is not None and alert.client_id not in truth.attacker_client_ids


def score(
    truth: GroundTruth, alerts: Sequence[Alert], timestamps: FloatArray, clients: StrArray
) -> Score:
    """Score `alerts` for the run whose events had these `timestamps` and `clients`."""
    attacking = np.isin(clients, truth.attacker_client_ids)
    detections = sorted(
        (alert for alert in alerts if is_detection(alert, truth)),
        key=lambda alert: alert.detected_at,
    )
    false_alarms = sum(1 for alert in alerts if is_false_alarm(alert, truth))
    detected: bool | None = None
    time_to_detect: float | None = None
    exposed: int | None = None
    if truth.attack_start_ts is not None:
        detected = bool(detections)
    if truth.attack_start_ts is not None and detections:
        at = detections[0].detected_at.timestamp()
        time_to_detect = at - truth.attack_start_ts
        window = (timestamps >= truth.attack_start_ts) & (timestamps <= at + 1e-6)
        if truth.alert_scope is AlertScope.CLIENT:
            window &= attacking
        exposed = int(window.sum())
    return Score(
        detected=detected,
        time_to_detect_s=time_to_detect,
        exposed_events=exposed,
        first_detector=detections[0].detector if detections else None,
        false_alarms=false_alarms,
        benign_events=int((~attacking).sum()),
        other_alerts=len(alerts) - len(detections) - false_alarms,
        alerts=len(alerts),
        alerts_by_detector=dict(sorted(Counter(alert.detector for alert in alerts).items())),
    )
