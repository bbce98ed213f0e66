"""Scoring alerts against ground truth: what counts as a detection, a false alarm, or neither."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.streams.simulation.scoring import score
from mlwarden.streams.simulation.truth import AlertScope, GroundTruth

START = 1_795_420_800.0
ATTACK = START + 600.0


def _truth(scope: AlertScope, kinds: list[AlertKind], attackers: list[str]) -> GroundTruth:
    return GroundTruth(
        scenario="test",
        summary="test",
        seed=1,
        model_id="digits-mlp",
        start_ts=START,
        end_ts=START + 1200.0,
        attack_kind=None if scope is AlertScope.NONE else "test",
        attack_start_ts=None if scope is AlertScope.NONE else ATTACK,
        attacker_client_ids=attackers,
        expected_alert_kinds=kinds,
        alert_scope=scope,
        model_versions=[],
        events=0,
        attacker_events=0,
        benign_clients=2,
        references=[],
        parameters={},
    )


def _alert(
    at: float, kind: AlertKind, client: str | None, detector: str = "d", **evidence: Any
) -> Alert:
    when = datetime.fromtimestamp(at, tz=UTC)
    return Alert(
        alert_id=f"{detector}-{at}",
        fingerprint=f"{detector}-{client}",
        kind=kind,
        detector=detector,
        severity=Severity.WARNING,
        model_id="digits-mlp",
        model_version="1",
        client_id=client,
        detected_at=when,
        emitted_at=when,
        score=1.0,
        threshold=0.5,
        summary="",
        evidence=evidence,
    )


# Ten benign events before the attack, then the attacker and a benign client alternate.
TIMES = np.array([START + 60.0 * i for i in range(10)] + [ATTACK + 10.0 * i for i in range(10)])
CLIENTS = np.array(["acct-1"] * 10 + ["acct-9", "acct-2"] * 5)


def test_client_scope_detection_time_and_exposure() -> None:
    truth = _truth(AlertScope.CLIENT, [AlertKind.EXTRACTION], ["acct-9"])
    alerts = [
        _alert(START + 30.0, AlertKind.EXTRACTION, "acct-1", "early"),  # before: false alarm
        _alert(ATTACK + 45.0, AlertKind.EXTRACTION, "acct-2", "wrong"),  # benign client
        _alert(ATTACK + 40.0, AlertKind.EXTRACTION, "acct-9", "right"),
        _alert(ATTACK + 50.0, AlertKind.DRIFT, None, "model"),  # neither
    ]
    result = score(truth, alerts, TIMES, CLIENTS)
    assert result.detected is True
    assert result.first_detector == "right"
    assert result.time_to_detect_s == 40.0
    assert result.exposed_events == 3  # attacker events at +0, +20, +40
    assert result.false_alarms == 2
    assert result.other_alerts == 1
    assert result.benign_events == 15


def test_sybil_alert_without_client_counts_when_its_evidence_names_an_attacker() -> None:
    truth = _truth(AlertScope.CLIENT, [AlertKind.EXTRACTION], ["acct-9"])
    alerts = [_alert(ATTACK + 5.0, AlertKind.EXTRACTION, None, clients=["acct-9", "acct-7"])]
    assert score(truth, alerts, TIMES, CLIENTS).detected is True


def test_model_scope_counts_any_expected_alert_after_the_start() -> None:
    truth = _truth(AlertScope.MODEL, [AlertKind.DRIFT], [])
    alerts = [_alert(ATTACK + 25.0, AlertKind.DRIFT, None)]
    result = score(truth, alerts, TIMES, CLIENTS)
    assert result.detected is True
    assert result.exposed_events == 3  # every event served since the start
    assert result.false_alarms == 0


def test_controls_have_no_detection_and_every_alert_is_a_false_alarm() -> None:
    truth = _truth(AlertScope.NONE, [], [])
    result = score(truth, [_alert(ATTACK, AlertKind.ABUSE, "acct-2")], TIMES, CLIENTS)
    assert result.detected is None
    assert result.false_alarms == 1
    assert result.false_alarms_per_100k == 100_000 / 20
