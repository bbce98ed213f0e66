"""Alert-to-first-effect and alert-to-page latency through the real broker and backends.

What runs, all on loopback ports of this machine and in one run:

- the embedded Tansu broker (memory storage), with mlwarden's topics created;
- a real `redis-server`, where the rate-limit decisions land for gateways;
- the Slack Web API and PagerDuty Events API v2 contract servers of `tests/contract_servers/`
  (threads of this process; the worker's real clients talk HTTP to them);
- `mlwarden worker` as its own process, configured only through `MLWARDEN_*` variables, with
  `benchmarks/playbooks/latency.yaml`: rate_limit → snapshot_evidence (SQLite, the default
  backend, in a temporary folder) → page (Slack + PagerDuty, console off).

This script publishes `--alerts` prada extraction alerts (distinct fingerprint and client each,
so one incident each) straight to `mlwarden.alerts` at a steady `--rate`, after three warm-up
alerts that are not counted (they absorb the worker's first connections). It stamps each send
with the wall clock, reads `mlwarden.actions` and `mlwarden.controls`, and listens to Redis
keyspace notifications for the decision keys. Wall-clock time is used only for these
measurements (the worker stamps action records with it too, on the same machine); pacing and
timeouts use the monotonic clock.

How to read the figures (milliseconds, percentiles over the incidents handled):

- `alert → first step started`: send → `at` of the incident's first `running` record, i.e.
  when the engine got the alert and began rate_limit: the alert's way in (broker, the
  worker's Faust consumer, the agent). The rows below minus this one are the steps' own work.
- `alert → first effect`: send of the alert → `at` of the incident's first `succeeded` action
  record, i.e. the rate_limit step, whose decision is then on the controls topic (acknowledged
  by the broker) and in Redis. The record's own time is used, not its arrival on the actions
  topic: the engine publishes an alert's action records only after all of its steps ran.
- `alert → decision in Redis`: the same, as a gateway sees it: this process receiving the
  keyspace notification of the decision key's SET (includes the notification's delivery).
- `alert → page`: send → `at` of the page step's `succeeded` record (Slack message posted and
  PagerDuty event accepted).
- `broker round trip`: produce (acks) → consume of one small record on the same broker, with
  aiokafka, measured in the same run while the worker idles. The consumer asks for the record
  after its produce was acknowledged, so the fetch finds it at once: this is the least a
  record's way through the broker costs, with no fetch wait in it. A consumer that is already
  waiting (the worker) sees a new record only when the broker looks again; Tansu looks at 1/2,
  3/4, 7/8… of the fetch's max wait (`--fetch-wait-ms`, see `streams/faust_transport.py` and
  `benchmarks/alert_pickup.py`). Absolute times on a shared 2-core machine are noisy; the
  ratio of the first-effect p50 to this round trip is the figure that carries over between
  machines. The alerts path costs at least one consume (alert in) plus one acknowledged
  produce (the decision) and a Redis write.
- `incidents fully handled`: decision in Redis and on the controls topic, an evidence snapshot
  in SQLite, a Slack message and a PagerDuty trigger, and succeeded records for all three
  steps. Below it, how many incidents' evidence also holds the client's raw queries that the
  alert carried (`recent_telemetry`, 5 per alert).
- `duplicates`: every extra effect (a second succeeded record of a step, decision on the
  controls topic, Slack message, PagerDuty trigger, evidence snapshot or document); must be 0.
- `throughput`: incidents handled / (first alert sent → last page). It cannot exceed the
  offered `--rate`; raise the rate to find where the worker stops keeping up (the response
  side handles the single-partition alerts topic one alert at a time).

Run from the repository root: `python benchmarks/response_latency.py [--alerts 200 --rate 20]
[--fetch-wait-ms N]`; `--fetch-wait-ms 1500` gives the worker Faust's own fetch wait, which is
what the worker used before `kafka.fetch_max_wait_ms` existed.
Exits 1 when an incident was not fully handled or a duplicate was found. Every process it
starts runs in its own process group and is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from mlwarden.responders.controls_store import DEFAULT_KEY_PREFIX
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.control import ControlDecision, control_key
from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.processes import start_process_group, stop_process_group
from mlwarden.streams.settings import KafkaSettings, WorkerSettings
from mlwarden.streams.topics import ensure_topics
from tests.contract_servers.pagerduty import ROUTING_KEY, PagerDutyContractServer
from tests.contract_servers.slack import VALID_TOKEN, SlackContractServer
from tests.integration.redis_server import running_redis
from tests.integration.workers import worker_env

PLAYBOOKS: Final = Path(__file__).resolve().parent / "playbooks"
MODEL_ID: Final = "fraud-scorer"
SLACK_CHANNEL: Final = "C0PAGES"
RECENT_QUERIES: Final = 5
"""Raw telemetry attached to each alert, as the worker attaches its ring buffer's records."""
WARMUP_ALERTS: Final = 3
ROUND_TRIPS: Final = 40
ROUND_TRIP_TOPIC: Final = "mlwarden.benchmark.roundtrip"
WORKER_READY_TIMEOUT_S: Final = 120.0
STALL_TIMEOUT_S: Final = 30.0
"""Stop waiting for the run to finish when nothing progressed for this long."""
SETTLE_S: Final = 2.0
"""Extra wait after the last page, so late duplicates would still be seen."""


@dataclass
class Tracked:
    """One incident (one alert) and what was observed of it."""

    fingerprint: str
    client_id: str
    sent_at: float | None = None
    started_at: float | None = None
    """`at` of the incident's first `running` record: the engine began the first step."""
    first_effect_at: float | None = None
    page_at: float | None = None
    redis_seen_at: float | None = None
    succeeded: Counter[str] = field(default_factory=Counter)
    """Succeeded action records by step type."""
    decisions_on_topic: int = 0

    @property
    def redis_key(self) -> str:
        return DEFAULT_KEY_PREFIX + control_key(self.client_id, MODEL_ID)


@dataclass
class Observed:
    """Everything read back while the benchmark runs, keyed for lookup."""

    by_fingerprint: dict[str, Tracked] = field(default_factory=dict)
    by_redis_key: dict[str, Tracked] = field(default_factory=dict)
    by_client: dict[str, Tracked] = field(default_factory=dict)
    succeeded_per_step_key: Counter[str] = field(default_factory=Counter)
    progress_at: float = field(default_factory=time.monotonic)

    def track(self, incident: Tracked) -> None:
        self.by_fingerprint[incident.fingerprint] = incident
        self.by_redis_key[incident.redis_key] = incident
        self.by_client[incident.client_id] = incident

    def on_action(self, record: ActionRecord) -> None:
        incident = self.by_fingerprint.get(record.incident_id)
        if incident is None:
            return
        at = record.at.timestamp()
        if record.state is StepState.RUNNING:
            if incident.started_at is None or at < incident.started_at:
                incident.started_at = at
            return
        if record.state is not StepState.SUCCEEDED:
            return
        self.progress_at = time.monotonic()
        self.succeeded_per_step_key[record.idempotency_key] += 1
        incident.succeeded[record.step_type] += 1
        if incident.first_effect_at is None or at < incident.first_effect_at:
            incident.first_effect_at = at
        if record.step_type == "page" and incident.page_at is None:
            incident.page_at = at

    def on_control(self, decision: ControlDecision) -> None:
        incident = self.by_client.get(decision.client_id)
        if incident is not None:
            incident.decisions_on_topic += 1

    def on_redis_set(self, key: str, at: float) -> None:
        incident = self.by_redis_key.get(key)
        if incident is not None and incident.redis_seen_at is None:
            incident.redis_seen_at = at
            self.progress_at = time.monotonic()


# --- processes ----------------------------------------------------------------------------


@contextmanager
def running_worker_process(
    env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`mlwarden worker` in its own process group (dies with this process on Linux)."""
    with log_path.open("ab") as log:
        process = start_process_group(
            [sys.executable, "-m", "mlwarden.streams.cli", "worker"], env=env, log=log
        )
    try:
        yield process
    finally:
        stop_process_group(process, timeout_s=15)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- alerts ---------------------------------------------------------------------------------


def make_alert(run: str, name: str) -> Alert:
    """A prada extraction alert of client `c-<run>-<name>`, with a few of its raw queries."""
    now = datetime.now(UTC)
    client = f"c-{run}-{name}"
    recent = [
        {
            "event_id": f"{client}-q{i}",
            "timestamp": now.timestamp() - (RECENT_QUERIES - i) * 0.05,
            "model_id": MODEL_ID,
            "model_version": "3",
            "client_id": client,
            "features": [0.1 * i, 3.2, 1.0],
            "probabilities": {"legit": 0.93, "fraud": 0.07},
            "prediction": "legit",
        }
        for i in range(RECENT_QUERIES)
    ]
    return Alert(
        alert_id=f"a-{run}-{name}",
        fingerprint=f"fp-{run}-{name}",
        kind=AlertKind.EXTRACTION,
        detector="prada",
        severity=Severity.CRITICAL,
        model_id=MODEL_ID,
        model_version="3",
        client_id=client,
        detected_at=now,
        emitted_at=now,
        score=0.97,
        threshold=0.9,
        summary=f"query distribution of {client} looks synthetic",
        evidence={"shapiro_w": 0.71, "queries": 412},
        recent_telemetry=recent,
    )


async def send_alert(producer: Any, topic: str, alert: Alert, incident: Tracked) -> Any:
    """Publish `alert` keyed by its fingerprint; returns the delivery future."""
    value = alert.model_dump_json().encode()
    incident.sent_at = time.time()
    return await producer.send(topic, key=alert.fingerprint.encode(), value=value)


# --- observers ------------------------------------------------------------------------------


async def read_topics(bootstrap: str, settings: KafkaSettings, observed: Observed) -> None:
    """Follow the actions and controls topics from their beginning until cancelled."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(name, p)
            for name in (topics.actions, topics.controls)
            for p in range(settings.partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for message in messages:
                    if message.value is None:
                        continue
                    if tp.topic == topics.actions:
                        observed.on_action(ActionRecord.model_validate_json(message.value))
                    else:
                        observed.on_control(ControlDecision.model_validate_json(message.value))
    finally:
        await consumer.stop()


async def watch_redis(redis: Redis[Any], observed: Observed, subscribed: asyncio.Event) -> None:
    """Record when each decision key is SET, from Redis keyspace notifications."""
    channel_prefix = "__keyspace@0__:"
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{channel_prefix}{DEFAULT_KEY_PREFIX}*")
    subscribed.set()
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            at = time.time()
            if message["data"] in (b"set", "set"):
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                observed.on_redis_set(name.removeprefix(channel_prefix), at)
    finally:
        await cast(Any, pubsub).aclose()  # redis ≥5; types-redis lags behind


async def broker_round_trips(bootstrap: str, producer: Any, samples: int) -> list[float]:
    """Produce (acks) → consume of one small record, `samples` times, in ms (first dropped).

    The fetch is sent after the produce is acknowledged (`getone` fetches on demand here), so
    it finds the record at once whatever its max wait."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    partition = TopicPartition(ROUND_TRIP_TOPIC, 0)
    try:
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        times: list[float] = []
        for i in range(samples + 1):
            await asyncio.sleep(0.05)
            started = time.time()
            await producer.send_and_wait(ROUND_TRIP_TOPIC, value=f"rt-{i}".encode())
            while True:
                message = await asyncio.wait_for(consumer.getone(), timeout=10)
                if message.value == f"rt-{i}".encode():
                    break
            times.append((time.time() - started) * 1000)
        return times[1:]
    finally:
        await consumer.stop()


# --- the run --------------------------------------------------------------------------------


@dataclass
class Servers:
    bootstrap: str
    kafka: KafkaSettings
    redis_port: int
    slack: SlackContractServer
    pagerduty: PagerDutyContractServer
    evidence_path: Path
    worker_log: Path


async def wait_until(
    done: Any, observed: Observed, *, timeout_s: float, stall_s: float | None
) -> bool:
    """Poll `done()` until true; False at the deadline or after `stall_s` without progress."""
    deadline = time.monotonic() + timeout_s
    while not done():
        now = time.monotonic()
        if now > deadline or (stall_s is not None and now - observed.progress_at > stall_s):
            return False
        await asyncio.sleep(0.05)
    return True


async def measure(servers: Servers, alerts: int, rate: float, fetch_wait_ms: int) -> Report:
    observed = Observed()
    topics = servers.kafka.topics
    redis: Redis[Any] = Redis(port=servers.redis_port)
    await redis.config_set("notify-keyspace-events", "K$")
    subscribed = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=servers.bootstrap, linger_ms=0)
    await producer.start()
    background = [
        asyncio.create_task(read_topics(servers.bootstrap, servers.kafka, observed)),
        asyncio.create_task(watch_redis(redis, observed, subscribed)),
    ]
    try:
        await asyncio.wait_for(subscribed.wait(), timeout=10)

        # Warm-up: the worker joins its group, opens Redis, SQLite and HTTP connections.
        warmup = [Tracked(f"fp-warmup-{i}", f"c-warmup-{i}") for i in range(WARMUP_ALERTS)]
        for i, incident in enumerate(warmup):
            observed.track(incident)
            await send_alert(producer, topics.alerts, make_alert("warmup", str(i)), incident)
        observed.progress_at = time.monotonic()
        ready = await wait_until(
            lambda: all(i.page_at is not None for i in warmup),
            observed,
            timeout_s=WORKER_READY_TIMEOUT_S,
            stall_s=None,
        )
        if not ready:
            raise RuntimeError(
                f"the worker did not page the warm-up alerts within {WORKER_READY_TIMEOUT_S:.0f}s"
                f"\n{tail(servers.worker_log)}"
            )
        round_trips = await broker_round_trips(servers.bootstrap, producer, ROUND_TRIPS)

        run = [Tracked(f"fp-run-{n:05d}", f"c-run-{n:05d}") for n in range(alerts)]
        for incident in run:
            observed.track(incident)
        deliveries = []
        started = time.monotonic()
        for n, incident in enumerate(run):
            pause = started + n / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            alert = make_alert("run", f"{n:05d}")
            deliveries.append(await send_alert(producer, topics.alerts, alert, incident))
        await asyncio.gather(*deliveries)
        send_s = time.monotonic() - started
        observed.progress_at = time.monotonic()
        finished = await wait_until(
            lambda: all(i.page_at is not None and i.redis_seen_at is not None for i in run),
            observed,
            timeout_s=120.0,
            stall_s=STALL_TIMEOUT_S,
        )
        await asyncio.sleep(SETTLE_S)
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await producer.stop()
        await cast(Any, redis).aclose()
    return Report(
        alerts=alerts,
        rate=rate,
        fetch_wait_ms=fetch_wait_ms,
        send_s=send_s,
        finished=finished,
        round_trips=round_trips,
        incidents=run,
        observed=observed,
    )


# --- checks and figures ---------------------------------------------------------------------


@dataclass
class Report:
    alerts: int
    rate: float
    fetch_wait_ms: int
    send_s: float
    finished: bool
    round_trips: list[float]
    incidents: list[Tracked]
    observed: Observed


@dataclass
class Checks:
    """Per check, the fingerprints that failed it, and the duplicates found."""

    missing: dict[str, set[str]] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    with_queries: int = 0
    """Incidents whose evidence holds the client's queries attached to the alert."""

    def fail(self, check: str, fingerprint: str) -> None:
        self.missing.setdefault(check, set()).add(fingerprint)

    def failed(self) -> set[str]:
        return set().union(*self.missing.values()) if self.missing else set()


@dataclass(frozen=True)
class EvidenceCount:
    """One incident's evidence documents in SQLite."""

    documents: int = 0
    distinct: int = 0
    """Distinct (snapshot key, index in snapshot): more documents than this are duplicates."""
    snapshots: int = 0
    queries: int = 0
    """Documents of raw queries (all but the alerts)."""


def evidence_by_incident(path: Path) -> dict[str, EvidenceCount]:
    """Read the worker's SQLite evidence file (read-only) and count per incident."""
    query = """
        SELECT incident_id, COUNT(*),
               COUNT(DISTINCT json_extract(doc, '$.mlwarden.snapshot.key') || '#' ||
                              json_extract(doc, '$.mlwarden.snapshot.index')),
               COUNT(DISTINCT json_extract(doc, '$.mlwarden.snapshot.key')),
               SUM(json_extract(doc, '$.event.kind') != 'alert')
        FROM evidence GROUP BY incident_id
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {
            row[0]: EvidenceCount(int(row[1]), int(row[2]), int(row[3]), int(row[4] or 0))
            for row in db.execute(query)
        }


def check_effects(report: Report, servers: Servers) -> Checks:
    """What each backend holds for every incident of the run."""
    checks = Checks()
    incidents = report.incidents
    for incident in incidents:
        for step in ("rate_limit", "snapshot_evidence", "page"):
            if incident.succeeded[step] == 0:
                checks.fail(f"{step} succeeded", incident.fingerprint)
        if incident.decisions_on_topic == 0:
            checks.fail("decision on the controls topic", incident.fingerprint)
        checks.duplicates["controls topic"] += max(0, incident.decisions_on_topic - 1)
    wanted = {i.fingerprint for i in incidents}
    checks.duplicates["action records"] = sum(
        count - 1
        for key, count in report.observed.succeeded_per_step_key.items()
        if count > 1 and key.split("/", 1)[0] in wanted
    )

    redis = SyncRedis(port=servers.redis_port)
    try:
        values = redis.mget([i.redis_key for i in incidents]) if incidents else []
    finally:
        redis.close()
    for incident, raw in zip(incidents, values, strict=True):
        decision = ControlDecision.model_validate_json(raw) if raw is not None else None
        if decision is None or decision.incident_id != incident.fingerprint:
            checks.fail("decision in Redis", incident.fingerprint)

    slack_pages = Counter(
        str(((m.metadata or {}).get("event_payload") or {}).get("incident_id"))
        for m in servers.slack.top_level(SLACK_CHANNEL)
    )
    with servers.pagerduty.lock:
        triggers = Counter(
            pd.dedup_key.split("/", 1)[0]
            for pd in servers.pagerduty.incidents
            for event in pd.events
            if event.get("event_action") == "trigger"
        )
    evidence = evidence_by_incident(servers.evidence_path)
    for incident in incidents:
        fp = incident.fingerprint
        held = evidence.get(fp, EvidenceCount())
        for name, count in (
            ("Slack message", slack_pages[fp]),
            ("PagerDuty trigger", triggers[fp]),
            ("evidence snapshot", held.snapshots),
        ):
            if count == 0:
                checks.fail(name, fp)
            checks.duplicates[name] += max(0, count - 1)
        checks.duplicates["evidence document"] += held.documents - held.distinct
        if held.queries >= RECENT_QUERIES:
            checks.with_queries += 1
    return checks


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<34}{'-':>9}{'-':>9}{'-':>9}{'-':>9}"
    figures = [percentile(values, q) for q in (50, 95, 99, 100)]
    return f"{label:<34}" + "".join(f"{v:9.1f}" for v in figures)


def print_report(report: Report, checks: Checks) -> bool:
    """Print the figures; True when every incident was fully handled without duplicates."""
    incidents = report.incidents

    def since_sent(attribute: str) -> list[float]:
        return [
            (getattr(i, attribute) - i.sent_at) * 1000
            for i in incidents
            if i.sent_at is not None and getattr(i, attribute) is not None
        ]

    first_effect = since_sent("first_effect_at")
    started = since_sent("started_at")
    in_redis = since_sent("redis_seen_at")
    paged = since_sent("page_at")
    handled = [i for i in incidents if i.fingerprint not in checks.failed()]
    duplicates = sum(checks.duplicates.values())
    round_trip = percentile(report.round_trips, 50)

    print(
        f"mlwarden response latency: {report.alerts} alerts (one incident each) offered at "
        f"{report.rate:g}/s, sent in {report.send_s:.1f} s"
    )
    print(
        "path: Tansu → mlwarden worker (playbook rate_limit → snapshot_evidence → page) → "
        "controls topic + Redis, SQLite evidence, Slack + PagerDuty contract servers"
    )
    print(f"worker's fetch wait (kafka.fetch_max_wait_ms): {report.fetch_wait_ms} ms")
    print(
        f"broker round trip (produce+ack, then consume; aiokafka): p50 {round_trip:.1f} ms, "
        f"max {max(report.round_trips):.1f} ms (n={len(report.round_trips)})"
    )
    print()
    print(f"{'latency from alert sent (ms)':<34}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    print(latency_row(f"→ first step started (n={len(started)})", started))
    print(latency_row(f"→ first effect (n={len(first_effect)})", first_effect))
    print(latency_row(f"→ decision seen in Redis (n={len(in_redis)})", in_redis))
    print(latency_row(f"→ page succeeded (n={len(paged)})", paged))
    print()
    if first_effect:
        ratio = percentile(first_effect, 50) / round_trip
        print(f"first-effect p50 / broker round trip p50: {ratio:.2f}")
    print(f"incidents fully handled: {len(handled)}/{len(incidents)}")
    print(
        f"  evidence holding the client's queries: {checks.with_queries}/{len(incidents)} "
        f"(each alert carries {RECENT_QUERIES})"
    )
    for check, failed in sorted(checks.missing.items()):
        print(f"  missing {check}: {len(failed)} (e.g. {sorted(failed)[0]})")
    detail = ", ".join(f"{name} {count}" for name, count in sorted(checks.duplicates.items()))
    print(f"duplicates found: {duplicates} ({detail})")
    sent = [i.sent_at for i in incidents if i.sent_at is not None]
    pages = [i.page_at for i in handled if i.page_at is not None]
    if sent and pages:
        span = max(pages) - min(sent)
        print(
            f"throughput: {len(handled) / span:.1f} incidents/s handled "
            f"(first alert sent → last page, {span:.1f} s; offered {report.rate:g}/s)"
        )
    if not report.finished:
        print(f"(stopped waiting: no progress for {STALL_TIMEOUT_S:.0f} s or 120 s passed)")
    return len(handled) == len(incidents) and duplicates == 0


def create_round_trip_topic(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="mlwarden-benchmark")
    try:
        admin.create_topics([NewTopic(ROUND_TRIP_TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=200, help="incidents to measure")
    parser.add_argument("--rate", type=float, default=20.0, help="alerts sent per second")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=KafkaSettings().fetch_max_wait_ms,
        help="the worker's kafka.fetch_max_wait_ms (default: the product's; Faust's own: 1500)",
    )
    args = parser.parse_args(argv)
    if args.alerts < 1 or args.rate <= 0 or args.fetch_wait_ms < 1:
        parser.error("--alerts and --fetch-wait-ms must be ≥ 1 and --rate > 0")
    # Ctrl-C and SIGTERM unwind the stack, so every process group is stopped on the way out
    # (SIGINT too when started in the background, where a shell would have it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    with tempfile.TemporaryDirectory(prefix="mlwarden-latency-") as scratch, ExitStack() as stack:
        tmp = Path(scratch)
        broker = stack.enter_context(EmbeddedBroker(log_path=tmp / "tansu.log"))
        redis = stack.enter_context(running_redis(log_dir=tmp))
        slack = stack.enter_context(SlackContractServer())
        pagerduty = stack.enter_context(PagerDutyContractServer())
        assert isinstance(slack, SlackContractServer)
        assert isinstance(pagerduty, PagerDutyContractServer)
        kafka = KafkaSettings(bootstrap=broker.bootstrap, partitions=4)
        ensure_topics(kafka)
        create_round_trip_topic(broker.bootstrap)
        evidence_path = tmp / "evidence.sqlite3"
        env = worker_env(
            kafka,
            "mlwarden-latency",
            tmp / "worker-state",
            MLWARDEN_PLAYBOOKS__PATH=str(PLAYBOOKS),
            MLWARDEN_RATE_LIMIT__REDIS_URL=redis.url,
            MLWARDEN_EVIDENCE__BACKEND="sqlite",
            MLWARDEN_EVIDENCE__SQLITE_PATH=str(evidence_path),
            MLWARDEN_EVIDENCE__SPOOL_DIR=str(tmp / "spool"),
            MLWARDEN_PAGING__CONSOLE="false",
            # The product's defaults, not the tests' shorter ones (worker_env's).
            MLWARDEN_WORKER__COMMIT_INTERVAL_S=str(WorkerSettings().commit_interval_s),
            MLWARDEN_WORKER__BATCH_WAIT_S=str(WorkerSettings().batch_wait_s),
            MLWARDEN_KAFKA__FETCH_MAX_WAIT_MS=str(args.fetch_wait_ms),
            MLWARDEN_PAGING__SLACK_TOKEN=VALID_TOKEN,
            MLWARDEN_PAGING__SLACK_CHANNEL=SLACK_CHANNEL,
            MLWARDEN_PAGING__SLACK_BASE_URL=slack.base_url,
            MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
            MLWARDEN_PAGING__PAGERDUTY_URL=pagerduty.events_url,
        )
        servers = Servers(
            bootstrap=broker.bootstrap,
            kafka=kafka,
            redis_port=redis.port,
            slack=slack,
            pagerduty=pagerduty,
            evidence_path=evidence_path,
            worker_log=tmp / "worker.log",
        )
        stack.enter_context(running_worker_process(env, servers.worker_log))
        report = asyncio.run(measure(servers, args.alerts, args.rate, args.fetch_wait_ms))
        checks = check_effects(report, servers)
        ok = print_report(report, checks)
        if not ok:
            print(f"\nworker log (last lines):\n{tail(servers.worker_log)}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started was stopped", file=sys.stderr)
        sys.exit(130)
