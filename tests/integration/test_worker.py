"""The worker on the real Tansu broker: DLQ, alerts, pages, backtest parity, restart safety."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from mlwarden.detectors.registry import DetectorSuiteConfig
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.dead_letter import DeadLetter
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.backtest import run_backtest
from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.replay import replay_file

from .workers import fully_committed, isolated_kafka, read_all, running_worker, wait_for, worker_env

pytestmark = pytest.mark.integration

STREAM = Path(__file__).parents[1] / "data" / "abuse_stream.jsonl"
BUDGET = {"rate_per_minute": 120, "burst": 60}
# The stream path is what is under test here, through the one detector whose alerts on this
# stream are known by heart; tests/unit/test_cli.py checks every detector's golden alerts.
BUDGET_ENV = {
    "MLWARDEN_DETECTORS__ENABLED": '["query_budget"]',
    **{f"MLWARDEN_DETECTORS__QUERY_BUDGET__{k.upper()}": str(v) for k, v in BUDGET.items()},
}


def comparable(alert: Alert) -> dict[str, object]:
    """An alert without its wall-clock stamp and the worker-attached telemetry sample."""
    return alert.model_dump(mode="json", exclude={"emitted_at", "recent_telemetry"})


def pages(bootstrap: str, topic: str) -> list[ActionRecord]:
    actions = [ActionRecord.model_validate_json(r.value) for r in read_all(bootstrap, topic)]
    return [a for a in actions if a.step_type == "page" and a.state is StepState.SUCCEEDED]


def test_worker_processes_dead_letters_alerts_and_pages_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    kafka = isolated_kafka(broker.bootstrap)
    topics = kafka.topics
    group = f"worker-{uuid.uuid4().hex[:6]}"
    env = worker_env(kafka, group, tmp_path / "state", **BUDGET_ENV)
    log = tmp_path / "worker.log"
    sent = replay_file(STREAM, broker.bootstrap, topics.telemetry)
    lines = [line for line in STREAM.read_bytes().splitlines() if line.strip()]
    assert sent == len(lines)

    with running_worker(env, log):
        wait_for(
            lambda: fully_committed(broker.bootstrap, group, topics.telemetry),
            120,
            "the worker to commit every telemetry record",
            log,
        )
        wait_for(
            lambda: fully_committed(broker.bootstrap, group, topics.alerts),
            60,
            "the worker to handle every alert",
            log,
        )
        wait_for(lambda: pages(broker.bootstrap, topics.actions), 30, "a page", log)

    # Every malformed line is in the DLQ, byte for byte, pointing back at its source record.
    dead = [
        DeadLetter.from_kafka(r.value, r.key, r.headers)
        for r in read_all(broker.bootstrap, topics.dead_letters)
    ]
    valid, malformed = [], []
    for line in lines:
        try:
            valid.append(TelemetryRecord.model_validate_json(line))
        except ValueError:
            malformed.append(line)
    assert sorted(d.original for d in dead) == sorted(malformed)
    assert len(malformed) == 5
    source = {
        (r.partition, r.offset): r.value for r in read_all(broker.bootstrap, topics.telemetry)
    }
    for letter in dead:
        assert letter.source_topic == topics.telemetry
        assert source[(letter.source_partition, letter.source_offset)] == letter.original

    # Exactly one alert for the one abusive client, and the same alert backtest finds.
    alerts = [Alert.model_validate_json(r.value) for r in read_all(broker.bootstrap, topics.alerts)]
    assert [a.client_id for a in alerts] == ["c-scraper-01"]
    suite = DetectorSuiteConfig.model_validate(
        {"enabled": ["query_budget"], "query_budget": BUDGET}
    )
    backtested = run_backtest(STREAM, suite)
    assert backtested.records == len(valid)
    assert [comparable(a) for a in backtested.alerts] == [comparable(a) for a in alerts]
    # The worker attaches the client's latest queries as of the alert (for evidence).
    recent = alerts[0].recent_telemetry
    assert recent
    assert {r["client_id"] for r in recent} == {"c-scraper-01"}
    assert max(r["timestamp"] for r in recent) <= alerts[0].detected_at.timestamp()

    # Exactly one page for the incident.
    [page] = pages(broker.bootstrap, topics.actions)
    assert page.incident_id == alerts[0].fingerprint

    # A restarted worker resumes: the incident's steps and the detector's state survive.
    [original] = read_all(broker.bootstrap, topics.alerts)
    scraper_continues = [
        TelemetryRecord(
            event_id=f"after-restart-{i}",
            timestamp=max(v.timestamp for v in valid) + 0.05 * (i + 1),
            model_id="fraud-scorer",
            model_version="3",
            client_id="c-scraper-01",
            prediction="legit",
        )
        for i in range(100)
    ]
    with running_worker(env, log):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
        # The alert again, as a crash between handling it and committing would deliver it.
        producer.send(topics.alerts, key=original.key, value=original.value)
        for record in scraper_continues:
            producer.send(
                topics.telemetry,
                key=record.client_id.encode(),
                value=record.model_dump_json().encode(),
            )
        producer.flush()
        producer.close()
        wait_for(
            lambda: fully_committed(broker.bootstrap, group, topics.telemetry),
            120,
            "the restarted worker to commit the new telemetry",
            log,
        )
        wait_for(
            lambda: fully_committed(broker.bootstrap, group, topics.alerts),
            60,
            "the restarted worker to handle the replayed alert",
            log,
        )

    after = [json.loads(r.value)["alert_id"] for r in read_all(broker.bootstrap, topics.alerts)]
    assert after == [alerts[0].alert_id] * 2, "the ongoing incident must not raise a new alert"
    assert len(pages(broker.bootstrap, topics.actions)) == 1, "a replayed alert must not page again"
