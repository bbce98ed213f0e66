"""The response side end to end: a real `mlwarden worker` over the real broker, Redis, SQLite
evidence and the Slack and PagerDuty contract servers.

Alerts are published straight to the alerts topic (valid `Alert` JSON), so nothing here depends
on detection. One worker serves the whole module (its start is the expensive part); each test
has its own alert, incident and client, and finds its effects by their idempotency keys. The
restart test runs last: it kills that worker with SIGKILL and starts it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from typer.testing import CliRunner

from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.control import ControlAction, ControlDecision, control_key
from mlwarden.schemas.incident import IncidentStatus, IncidentSummary
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.cli import app as cli_app
from mlwarden.streams.settings import KafkaSettings
from tests.contract_servers import fixtures
from tests.contract_servers.pagerduty import ROUTING_KEY, PagerDutyContractServer
from tests.contract_servers.pagerduty import Incident as PagerDutyAlert
from tests.contract_servers.slack import VALID_TOKEN, Message, SlackContractServer

from .redis_server import RedisServer, redis_server
from .workers import fully_committed, isolated_kafka, running_worker, wait_for, worker_env

__all__ = ["redis_server"]
pytestmark = pytest.mark.integration
slack_server, pagerduty_server = fixtures.slack_server, fixtures.pagerduty_server

T = TypeVar("T")
PLAYBOOKS = Path(__file__).parents[1] / "data" / "playbooks" / "worker"
MODEL = "fraud-scorer"
CHANNEL = "C0PAGES"
QUERIES = 5
"""Raw telemetry records each alert carries: its snapshot is 1 alert + 5 query documents."""
FIRST_ALERT_S = 90.0
"""The first alert waits for the worker to start and join its group (seconds, mostly)."""
STEP_S = 30.0
runner = CliRunner()


class TopicTail:
    """Everything on one topic so far, read incrementally from the beginning (no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        found = self._consumer.partitions_for_topic(topic) or ()
        self._partitions = [TopicPartition(topic, p) for p in sorted(found)]
        assert self._partitions, f"topic {topic} has no partitions"
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning()
        self.records: list[Any] = []

    def read(self) -> list[Any]:
        """Every record up to the ends the broker reports now, in offset order per partition."""
        ends = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(
            self._consumer.position(tp) < end for tp, end in ends.items()
        ):
            for messages in self._consumer.poll(timeout_ms=200).values():
                self.records.extend(messages)
        return self.records

    def close(self) -> None:
        self._consumer.close()


class Stack:
    """The worker under test and every backend it talks to, with the means to look at them."""

    def __init__(
        self,
        kafka: KafkaSettings,
        env: dict[str, str],
        tmp: Path,
        redis_url: str,
        redis_prefix: str,
        slack: SlackContractServer,
        pagerduty: PagerDutyContractServer,
    ) -> None:
        self.kafka = kafka
        self.topics = kafka.topics
        self.group = env["MLWARDEN_WORKER__APP_ID"]
        self.env = env
        self.log = tmp / "worker.log"
        self.evidence_path = Path(env["MLWARDEN_EVIDENCE__SQLITE_PATH"])
        self.redis = redis.Redis.from_url(redis_url)
        self.redis_prefix = redis_prefix
        self.slack = slack
        self.pagerduty = pagerduty
        self.process: subprocess.Popen[bytes] | None = None
        self._worker: ExitStack | None = None
        self._tails = {
            name: TopicTail(kafka.bootstrap, topic)
            for name, topic in (
                ("alerts", self.topics.alerts),
                ("actions", self.topics.actions),
                ("incidents", self.topics.incidents),
                ("controls", self.topics.controls),
            )
        }

    # --- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = ExitStack()
            self.process = self._worker.enter_context(running_worker(self.env, self.log))

    def kill(self) -> None:
        """SIGKILL the worker's process group: no shutdown, no flush, no offset commit."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.stop()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = self.process = None

    def close(self) -> None:
        self.stop()
        for tail in self._tails.values():
            tail.close()
        self.redis.close()

    def wait(self, check: Callable[[], T | None], what: str, timeout_s: float = STEP_S) -> T:
        return wait_for(check, timeout_s, what, self.log)

    # --- in ------------------------------------------------------------------------------

    def publish(self, key: bytes, value: bytes) -> None:
        """One record on the alerts topic, acknowledged by the broker."""
        producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
        try:
            producer.send(self.topics.alerts, key=key, value=value).get(timeout=30)
        finally:
            producer.close()

    def publish_alert(self, alert: Alert) -> None:
        self.publish(alert.fingerprint.encode(), alert.model_dump_json().encode())

    def cli(self, *args: str) -> str:
        """`mlwarden ARGS` in this process, against this stack; its stdout (exit 0 required)."""
        result = runner.invoke(cli_app, list(args), env=self.env)
        assert result.exit_code == 0, (
            f"mlwarden {' '.join(args)} exited {result.exit_code}:\n{result.output}"
            f"\n{result.exception!r}"
        )
        return result.stdout

    # --- out -----------------------------------------------------------------------------

    def actions(self, incident_id: str) -> list[ActionRecord]:
        """The incident's action records; one step's records in the order they were written."""
        parsed = [ActionRecord.model_validate_json(r.value) for r in self._tails["actions"].read()]
        return [a for a in parsed if a.incident_id == incident_id]

    def step_states(self, incident_id: str, key: str) -> list[StepState]:
        return [a.state for a in self.actions(incident_id) if a.idempotency_key == key]

    def succeeded(self, incident_id: str, key: str) -> ActionRecord | None:
        """The record of step `key` succeeding, once it is on the actions topic."""
        done = [
            a
            for a in self.actions(incident_id)
            if a.idempotency_key == key and a.state is StepState.SUCCEEDED
        ]
        return done[-1] if done else None

    def success(self, incident_id: str, key: str, timeout_s: float = STEP_S) -> ActionRecord:
        """Wait for step `key` to succeed on the actions topic (records of one engine call
        land on several partitions, so each is waited for, not inferred from another)."""
        return self.wait(lambda: self.succeeded(incident_id, key), f"step {key}", timeout_s)

    def summaries(self, incident_id: str) -> list[IncidentSummary]:
        return [
            IncidentSummary.model_validate_json(r.value)
            for r in self._tails["incidents"].read()
            if r.key == incident_id.encode() and r.value is not None
        ]

    def summary(self, incident_id: str) -> IncidentSummary | None:
        found = self.summaries(incident_id)
        return found[-1] if found else None

    def summary_when(
        self,
        incident_id: str,
        condition: Callable[[IncidentSummary], bool],
        what: str,
        timeout_s: float = STEP_S,
    ) -> IncidentSummary:
        """Wait for the incident's latest summary to meet `condition`; return it."""

        def check() -> IncidentSummary | None:
            latest = self.summary(incident_id)
            return latest if latest is not None and condition(latest) else None

        return self.wait(check, what, timeout_s)

    def decisions(self, client_id: str) -> list[ControlDecision]:
        """Every decision about `client_id` on the controls topic."""
        parsed = [
            ControlDecision.model_validate_json(r.value)
            for r in self._tails["controls"].read()
            if r.value is not None
        ]
        return [d for d in parsed if d.client_id == client_id]

    def redis_decision(self, client_id: str, model_id: str | None) -> ControlDecision | None:
        raw = self.redis.get(self.redis_prefix + control_key(client_id, model_id))
        return None if raw is None else ControlDecision.model_validate_json(raw)

    def alert_records(self, fingerprint: str) -> list[Any]:
        return [r for r in self._tails["alerts"].read() if r.key == fingerprint.encode()]

    def slack_posts(self, idempotency_key: str) -> list[Message]:
        """Top-level Slack messages the worker posted for one step (their metadata says which)."""
        with self.slack.lock:
            return [
                m
                for m in self.slack.messages
                if m.thread_ts is None
                and (m.metadata or {}).get("event_payload", {}).get("idempotency_key")
                == idempotency_key
            ]

    def pagerduty_alerts(self, dedup_key: str) -> list[PagerDutyAlert]:
        return self.pagerduty.by_dedup_key(dedup_key)

    def evidence_documents(self, incident_id: str) -> list[dict[str, Any]]:
        """The incident's evidence documents in the worker's SQLite file, in chain order."""
        if not self.evidence_path.exists():
            return []
        with contextlib.closing(sqlite3.connect(self.evidence_path, timeout=10.0)) as db:
            rows = db.execute(
                "SELECT doc FROM evidence WHERE incident_id = ? ORDER BY seq", (incident_id,)
            ).fetchall()
        return [json.loads(doc) for (doc,) in rows]


@pytest.fixture(scope="module")
def stack(
    broker: EmbeddedBroker,
    redis_server: RedisServer,
    slack_server: SlackContractServer,
    pagerduty_server: PagerDutyContractServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("response-worker")
    kafka = isolated_kafka(broker.bootstrap)
    redis_prefix = f"t{uuid.uuid4().hex[:8]}:controls:"
    env = worker_env(
        kafka,
        f"response-{uuid.uuid4().hex[:6]}",
        tmp / "state",
        MLWARDEN_PLAYBOOKS__PATH=str(PLAYBOOKS),
        # Detection is not under test (alerts are published directly): the lightest suite.
        MLWARDEN_DETECTORS__ENABLED='["query_budget"]',
        MLWARDEN_PAGING__SLACK_TOKEN=VALID_TOKEN,
        MLWARDEN_PAGING__SLACK_CHANNEL=CHANNEL,
        MLWARDEN_PAGING__SLACK_BASE_URL=slack_server.base_url,
        MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
        MLWARDEN_PAGING__PAGERDUTY_URL=pagerduty_server.events_url,
        MLWARDEN_RATE_LIMIT__REDIS_URL=redis_server.url,
        MLWARDEN_RATE_LIMIT__KEY_PREFIX=redis_prefix,
        MLWARDEN_EVIDENCE__BACKEND="sqlite",
        MLWARDEN_EVIDENCE__SQLITE_PATH=str(tmp / "evidence.sqlite3"),
    )
    # The servers are shared with other modules: no failure injected there may leak in here.
    slack_server.reset()
    pagerduty_server.reset()
    running = Stack(kafka, env, tmp, redis_server.url, redis_prefix, slack_server, pagerduty_server)
    try:
        running.start()
        yield running
    finally:
        running.close()


def make_alert(
    kind: AlertKind = AlertKind.EXTRACTION,
    detector: str = "prada",
    *,
    client: bool = True,
    severity: Severity = Severity.CRITICAL,
) -> Alert:
    """A fresh alert (its own fingerprint, so its own incident) carrying its client's queries."""
    tag = uuid.uuid4().hex[:8]
    client_id = f"c-{tag}" if client else None
    now = datetime.now(UTC)
    queries = [
        TelemetryRecord(
            event_id=f"q-{tag}-{i}",
            timestamp=now.timestamp() - QUERIES + i,
            model_id=MODEL,
            model_version="3",
            client_id=client_id or f"c-other-{i}",
            features=[0.1 * i, 1.0],
            probabilities={"legit": 0.5, "fraud": 0.5},
            prediction="legit",
        )
        for i in range(QUERIES)
    ]
    return Alert(
        alert_id=f"a-{tag}",
        fingerprint=f"fp-{tag}",
        kind=kind,
        detector=detector,
        severity=severity,
        model_id=MODEL,
        model_version="3",
        client_id=client_id,
        detected_at=now,
        emitted_at=now,
        score=0.97,
        threshold=0.9,
        summary=f"{detector} on {MODEL} ({tag})",
        evidence={"queries": 400},
        recent_telemetry=[json.loads(q.model_dump_json(exclude_none=True)) for q in queries],
    )


def step_key(alert: Alert, playbook: str, index: int) -> str:
    """The engine's idempotency key of a step: incident (the fingerprint) / playbook / index."""
    return f"{alert.fingerprint}/{playbook}/{index}"


EXTRACTION = "worker-extraction"


def all_succeeded(summary: IncidentSummary) -> bool:
    return all(step.state is StepState.SUCCEEDED for step in summary.steps)


def is_resolved(summary: IncidentSummary) -> bool:
    return summary.status is IncidentStatus.RESOLVED


def extraction_done(stack: Stack, alert: Alert) -> list[ActionRecord]:
    """Wait for every step of the extraction playbook to succeed; their success records."""
    return [
        stack.success(alert.fingerprint, step_key(alert, EXTRACTION, i), FIRST_ALERT_S)
        for i in range(3)
    ]


def test_extraction_alert_limits_snapshots_and_pages_once(stack: Stack) -> None:
    alert = make_alert()
    incident = alert.fingerprint
    assert alert.client_id is not None
    stack.publish_alert(alert)
    rate, snapshot, page = extraction_done(stack, alert)
    rate_key, evidence_key, page_key = (step_key(alert, EXTRACTION, i) for i in range(3))

    # Every step's state changes are on the actions topic, in order, each started once.
    for key in (rate_key, evidence_key, page_key):
        assert stack.step_states(incident, key) == [StepState.RUNNING, StepState.SUCCEEDED], key
    records = stack.actions(incident)
    assert {a.step_type for a in records} == {"rate_limit", "snapshot_evidence", "page"}
    assert {a.alert_id for a in records} == {alert.alert_id}

    # rate_limit: one decision on the controls topic, the same one in Redis for gateways.
    [decision] = stack.decisions(alert.client_id)
    assert decision.action is ControlAction.THROTTLE
    assert decision.limit_per_minute == 10
    assert decision.model_id == MODEL
    assert (decision.incident_id, decision.decision_id) == (incident, rate_key)
    assert decision.expires_at is not None
    assert decision.expires_at > datetime.now(UTC)
    assert stack.redis_decision(alert.client_id, MODEL) == decision
    assert 0 < stack.redis.pttl(stack.redis_prefix + decision.key) <= 6 * 3600 * 1000
    assert rate.result["decisions"][0]["written_to"] == ["controls_topic", "redis"]

    # snapshot_evidence: the incident's documents are in the SQLite store, chained, and the
    # chain verifies against the tail the step recorded (`mlwarden evidence verify`).
    # (Whether the alert's queries are among them: test_the_snapshot_holds_the_alerts_queries.)
    documents = stack.evidence_documents(incident)
    assert documents
    assert snapshot.result["store"] == "sqlite"
    assert snapshot.result["documents"] == snapshot.result["written"] == len(documents)
    assert documents[0]["event"]["kind"] == "alert"
    assert documents[0]["mlwarden"]["alert"]["id"] == alert.alert_id
    assert {d["client"]["id"] for d in documents} == {alert.client_id}
    assert {d["mlwarden"]["snapshot"]["key"] for d in documents} == {evidence_key}
    assert [d["mlwarden"]["chain"]["seq"] for d in documents] == list(range(1, len(documents) + 1))
    tail = f"{snapshot.result['last_seq']}:{snapshot.result['last_hash']}"
    verified = stack.cli("evidence", "verify", incident, "--tail", tail)
    assert "NOT intact" not in verified
    assert "intact" in verified

    # page: exactly one Slack message and one PagerDuty alert, deduplicated by the step's key.
    [message] = stack.slack_posts(page_key)
    assert message.channel == CHANNEL
    assert page.result["delivered"]["slack"] == {"channel": CHANNEL, "ts": message.ts}
    assert alert.client_id in json.dumps(message.blocks)
    [paged] = stack.pagerduty_alerts(page_key)
    assert paged.status == "triggered"
    assert [e["event_action"] for e in paged.events] == ["trigger"]
    assert paged.events[0]["payload"]["custom_details"]["incident_id"] == incident
    assert page.result["delivered"]["pagerduty"]["dedup_key"] == page_key

    # The incident's summary is on the incidents topic for the CLI.
    summary = stack.summary_when(incident, all_succeeded, "the summary with every step done")
    assert summary.status is IncidentStatus.OPEN
    assert summary.playbooks == [EXTRACTION]
    assert (summary.client_id, summary.alert_count) == (alert.client_id, 1)
    assert [s.step_type for s in summary.steps] == ["rate_limit", "snapshot_evidence", "page"]


def test_the_snapshot_holds_the_alerts_queries(stack: Stack) -> None:
    alert = make_alert()
    stack.publish_alert(alert)
    key = step_key(alert, EXTRACTION, 1)
    stack.success(alert.fingerprint, key, FIRST_ALERT_S)
    documents = stack.evidence_documents(alert.fingerprint)
    assert [d["event"]["kind"] for d in documents] == ["alert"] + ["event"] * QUERIES
    assert [d["event"].get("id") for d in documents[1:]] == [
        q["event_id"] for q in alert.recent_telemetry
    ]
    assert {d["client"]["id"] for d in documents} == {alert.client_id}


def test_approval_parks_the_playbook_until_an_approver_says_yes(stack: Stack) -> None:
    playbook = "worker-approval"
    alert = make_alert(AlertKind.ABUSE, "query_budget", severity=Severity.WARNING)
    incident = alert.fingerprint
    assert alert.client_id is not None
    stack.publish_alert(alert)
    parked = stack.summary_when(
        incident,
        lambda s: bool(s.steps) and s.steps[0].awaiting_approval,
        "the approval step to park the incident",
        FIRST_ALERT_S,
    )
    assert [s.state for s in parked.steps] == [StepState.PENDING, None, None]
    assert parked.steps[0].waiting_until is not None
    stack.wait(
        lambda: stack.step_states(incident, step_key(alert, playbook, 0)) == [StepState.PENDING],
        "the pending approval on the actions topic",
    )
    listed = stack.cli("incidents", "list")
    [line] = [line for line in listed.splitlines() if line.startswith(incident)]
    assert "1 awaiting approval" in line
    assert playbook in line
    # The approval request went out with Approve / Reject buttons.
    [ask] = stack.slack_posts(f"{step_key(alert, playbook, 0)}#ask")
    assert "mlwarden.approve" in json.dumps(ask.blocks)

    # Someone who is not an approver is refused; nothing moves.
    stack.cli("incidents", "approve", incident, "--by", "bob")
    stack.wait(
        lambda: f"'bob' may not decide {playbook}/0" in stack.log.read_text(errors="replace"),
        "the worker to refuse bob's approval",
    )
    assert stack.decisions(alert.client_id) == []
    assert stack.step_states(incident, step_key(alert, playbook, 1)) == []

    # alice approves: the rest of the playbook runs.
    sent = stack.cli("incidents", "approve", incident, "--by", "alice", "--comment", "go")
    assert "sent approve" in sent
    page_key = step_key(alert, playbook, 2)
    approval = stack.success(incident, step_key(alert, playbook, 0))
    stack.success(incident, step_key(alert, playbook, 1))
    stack.success(incident, page_key)
    assert (approval.result["approved"], approval.result["comment"]) == ("alice", "go")
    [decision] = stack.decisions(alert.client_id)
    assert decision.action is ControlAction.BLOCK
    assert decision.decision_id == step_key(alert, playbook, 1)
    assert stack.redis_decision(alert.client_id, None) == decision
    assert len(stack.slack_posts(page_key)) == 1
    assert len(stack.pagerduty_alerts(page_key)) == 1

    # `incidents show` has it with every step done.
    stack.summary_when(incident, all_succeeded, "the summary after approval")
    shown = IncidentSummary.model_validate_json(stack.cli("incidents", "show", incident))
    assert (shown.incident_id, shown.status) == (incident, IncidentStatus.OPEN)
    assert [s.state for s in shown.steps] == [StepState.SUCCEEDED] * 3
    assert not any(s.awaiting_approval for s in shown.steps)
    listed = stack.cli("incidents", "list")
    [line] = [line for line in listed.splitlines() if line.startswith(incident)]
    assert "awaiting approval" not in line


def test_resolving_closes_the_paged_approval_request(stack: Stack) -> None:
    alert = make_alert(AlertKind.ABUSE, "query_budget", severity=Severity.WARNING)
    incident = alert.fingerprint
    ask_key = f"{step_key(alert, 'worker-approval', 0)}#ask"
    stack.publish_alert(alert)
    stack.summary_when(
        incident,
        lambda s: bool(s.steps) and s.steps[0].awaiting_approval,
        "the approval step to park the incident",
        FIRST_ALERT_S,
    )
    assert [i.status for i in stack.pagerduty_alerts(ask_key)] == ["triggered"]
    stack.cli("incidents", "resolve", incident, "--by", "carol")
    resolved = stack.summary_when(incident, is_resolved, "the resolved summary")
    assert resolved.steps[0].state is StepState.SKIPPED
    # Follow-ups run before the engine publishes the resolved summary: no need to wait.
    assert [i.status for i in stack.pagerduty_alerts(ask_key)] == ["resolved"]
    [message] = stack.slack_posts(ask_key)
    assert "mlwarden.approve" not in json.dumps(message.blocks)


def assert_page_closed(stack: Stack, alert: Alert, page_key: str) -> None:
    """PagerDuty resolved with the page's dedup_key; the Slack message says Resolved."""
    stack.wait(
        lambda: [i.status for i in stack.pagerduty_alerts(page_key)] == ["resolved"],
        "PagerDuty to resolve the page",
    )
    [paged] = stack.pagerduty_alerts(page_key)
    assert [e["event_action"] for e in paged.events] == ["trigger", "resolve"]
    assert {e["dedup_key"] for e in paged.events} == {page_key}
    stack.success(alert.fingerprint, f"{page_key}#resolved")
    [message] = stack.slack_posts(page_key)
    assert message.updates == 1
    assert "Resolved" in json.dumps(message.blocks)
    assert any("Resolved" in (m.text or "") for m in stack.slack.thread(CHANNEL, message.ts))


def test_resolving_from_the_cli_closes_the_page(stack: Stack) -> None:
    alert = make_alert()
    incident = alert.fingerprint
    stack.publish_alert(alert)
    extraction_done(stack, alert)
    stack.cli("incidents", "resolve", incident, "--by", "carol", "--comment", "false positive")
    assert_page_closed(stack, alert, step_key(alert, EXTRACTION, 2))
    resolved = stack.summary_when(incident, is_resolved, "the resolved summary")
    assert resolved.resolved_reason == "resolved by carol: false positive"
    assert incident not in stack.cli("incidents", "list")
    assert incident in stack.cli("incidents", "list", "--all")


def test_a_quiet_period_resolves_the_page_on_the_workers_tick(stack: Stack) -> None:
    alert = make_alert(AlertKind.DRIFT, "feature_drift", client=False)
    stack.publish_alert(alert)
    page_key = step_key(alert, "worker-quiet", 0)
    stack.success(alert.fingerprint, page_key, FIRST_ALERT_S)
    assert_page_closed(stack, alert, page_key)
    resolved = stack.summary_when(alert.fingerprint, is_resolved, "the resolved summary")
    assert resolved.resolved_reason == "no alert for 0:00:02"


def test_a_killed_worker_resumes_without_doing_anything_twice(stack: Stack) -> None:
    alert = make_alert()
    incident = alert.fingerprint
    assert alert.client_id is not None
    keys = [step_key(alert, EXTRACTION, i) for i in range(3)]
    stack.publish_alert(alert)
    _, snapshot, _ = extraction_done(stack, alert)
    stack.kill()  # right after the page: nothing gets a chance to flush or commit

    stack.start()
    [original] = stack.alert_records(incident)
    before = len(stack.summaries(incident))
    # The same alert again, as a crash between handling it and committing would deliver it.
    stack.publish(original.key, original.value)
    stack.wait(
        lambda: fully_committed(stack.kafka.bootstrap, stack.group, stack.topics.alerts),
        "the restarted worker to handle the replayed alert",
        FIRST_ALERT_S,
    )
    stack.wait(
        lambda: len(stack.summaries(incident)) > before,
        "the restarted worker's summary of the incident",
    )

    # No step ran again: each started once, and its effects happened once.
    for key in keys:
        assert stack.step_states(incident, key) == [StepState.RUNNING, StepState.SUCCEEDED], key
    [decision] = stack.decisions(alert.client_id)
    assert decision.decision_id == keys[0]
    assert stack.redis_decision(alert.client_id, MODEL) == decision
    assert len(stack.evidence_documents(incident)) == snapshot.result["documents"]
    assert len(stack.slack_posts(keys[2])) == 1
    [paged] = stack.pagerduty_alerts(keys[2])
    assert [e["event_action"] for e in paged.events] == ["trigger"]
    summary = stack.summary(incident)
    assert summary is not None
    assert summary.alert_count == 1
    assert [(s.state, s.attempts) for s in summary.steps] == [(StepState.SUCCEEDED, 1)] * 3
