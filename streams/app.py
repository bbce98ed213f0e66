"""The Faust application: topics, tables and thin agents around pure code.

`detect` hands each batch of raw telemetry to `decode_batch` and the per-partition detector
pipelines; `respond` hands each alert to the playbook engine, `decide` each human command
(CLI or Slack button, via `mlwarden.commands`), and a once-a-second timer lets the engine
resume waits and resolve quiet incidents. None of them knows any detection or response logic
(STYLE.md §2), so backtest and tests run exactly the same code without Kafka.
"""

from __future__ import annotations

import logging
import os
import time
from asyncio import get_running_loop as loop
from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from signal import SIGTERM
from typing import Any, cast

import faust
from faust.types import TP, EventT
from faust.web import Request, Response, View
from kafka.errors import KafkaError
from mode import BaseSignalT
from pydantic import ValidationError

from mlwarden.detectors.registry import build_pipeline
from mlwarden.playbooks.engine import EngineOutput, PlaybookEngine
from mlwarden.playbooks.loader import load_playbooks
from mlwarden.playbooks.shipped import library_dir
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.dead_letter import DeadLetter
from mlwarden.schemas.errors import BrokerError
from mlwarden.schemas.incident import EngineCommand
from mlwarden.streams.decode import RawMessage, decode_batch
from mlwarden.streams.faust_transport import use_fetch_max_wait
from mlwarden.streams.lag import group_positions
from mlwarden.streams.partitions import PartitionedPipelines, partition_of_key
from mlwarden.streams.recent import RecentTelemetry, attach_recent
from mlwarden.streams.response import IncidentTable, build_responders
from mlwarden.streams.settings import Settings
from mlwarden.streams.slack_endpoint import handle_slack_action
from mlwarden.streams.watchdog import StallWatchdog, check_interval_s

_LOG = logging.getLogger(__name__)


class PartitionSnapshotTable(faust.Table[str, Any]):
    """Detector snapshots, whose keys name their telemetry partition (see streams/partitions).

    Faust places a table write in the partition of the event being processed; a batch spans
    events, so the changelog partition is taken from the key instead.
    """

    def partition_for_key(self, key: Any) -> int:
        return partition_of_key(key)


def broker_url(bootstrap: str) -> str:
    """Faust's broker URL from a Kafka bootstrap list `h1:9092,h2:9092`."""
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings, watchdog: StallWatchdog | None = None) -> faust.App:
    """Build the worker application from `settings` (one app per process).

    With a `watchdog`, the worker stops itself (SIGTERM, Faust's clean shutdown) once it
    reports a stall; the caller reads `watchdog.stall` to choose the exit code.
    """
    kafka, worker = settings.kafka, settings.worker
    app = faust.App(
        worker.app_id,
        broker=broker_url(kafka.bootstrap),
        store="memory://",
        datadir=str(worker.data_dir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_max_poll_interval=kafka.max_poll_interval_s,
        # Faust polls again only once it has queued every record of the last poll for the
        # agents, and aiokafka hands out everything it has prefetched (measured: all 30,000
        # records of the benchmark in one poll, which took 26 s to queue with every detector on
        # and past max_poll_interval on a busy machine). At most one batch per poll, the next
        # poll comes after at most about one batch's detection.
        broker_max_poll_records=worker.batch_size,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=worker.commit_interval_s,
        producer_max_batch_size=kafka.producer_batch_bytes,
        web_enabled=worker.web_port > 0,
        web_port=worker.web_port or 6066,
        key_serializer="raw",
        value_serializer="raw",
    )
    use_fetch_max_wait(app, kafka.fetch_max_wait_ms)
    topics = kafka.topics

    def raw_topic(name: str, partitions: int = kafka.partitions) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=partitions)

    telemetry_topic = raw_topic(topics.telemetry)
    dead_letter_topic = raw_topic(topics.dead_letters)
    # The response side sees every alert and command in one place (grouping, silences and
    # inhibition span partitions of telemetry): one partition each. Alerts are few.
    alerts_topic = raw_topic(topics.alerts, partitions=1)
    commands_topic = raw_topic(topics.commands, partitions=1)
    incidents_topic = raw_topic(topics.incidents, partitions=1)
    actions_topic = raw_topic(topics.actions)
    controls_topic = raw_topic(topics.controls)

    detector_state = app.tables.add(
        PartitionSnapshotTable(
            app,
            name="detector-state",
            beacon=app.tables.beacon,
            partitions=kafka.partitions,
            help="Per-partition detector snapshots (changelog-backed).",
        )
    )
    incidents = app.Table(
        "incidents",
        partitions=1,
        help="The playbook engine's state: incidents, their step states, silences.",
    )

    snapshot_table = cast(MutableMapping[str, Any], detector_state)
    pipelines = PartitionedPipelines(
        lambda: build_pipeline(settings.detectors),
        snapshot_table,
        # Snapshots as often as offsets are committed: a restart replays at most about one
        # interval of events onto a snapshot that is at most one interval old.
        checkpoint_interval_s=worker.commit_interval_s,
    )
    clock = lambda: datetime.now(UTC)  # noqa: E731 - the engine's only view of time
    incident_table = IncidentTable(incidents)

    async def publish_control(key: bytes, value: bytes) -> None:
        # Wait for the broker's acknowledgement: the decision must be durable before Redis.
        await (await controls_topic.send(key=key, value=value))

    responders = build_responders(
        settings, publish_control=publish_control, incidents=incident_table, clock=clock
    )
    engine = PlaybookEngine(
        load_playbooks(settings.playbooks.path or library_dir()),
        responders.by_step_type,
        incident_table,
        clock=clock,
    )
    recent = RecentTelemetry()

    async def publish(out: EngineOutput) -> None:
        """Actions to the audit trail, incident summaries (and tombstones) for the CLI."""
        for action in out.actions:
            await actions_topic.send(
                key=action.idempotency_key.encode(), value=action.model_dump_json().encode()
            )
        for summary in out.incidents:
            await incidents_topic.send(
                key=summary.incident_id.encode(), value=summary.model_dump_json().encode()
            )
        for incident_id in out.expired:
            await incidents_topic.send(key=incident_id.encode(), value=None)

    # Detection runs on one thread beside the event loop, so a long batch never starves the
    # consumer's heartbeats (measured: with every detector on, a blocked loop lost its group
    # membership after the 10 s session timeout). One thread keeps batches in order.
    detection_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlwarden-detect")

    @app.agent(telemetry_topic)
    async def detect(stream: faust.StreamT[bytes]) -> None:
        # take_events is on faust.Stream but missing from the StreamT protocol it is typed as.
        batches = stream.take_events(  # type: ignore[attr-defined]
            worker.batch_size, within=worker.batch_wait_s
        )
        async for events in batches:
            for tp, partition_events in _by_partition(events).items():
                messages = [_raw_message(tp, event) for event in partition_events]
                rejects, alerts, snapshot_writes = await loop().run_in_executor(
                    detection_thread, detect_batch, tp.partition, messages
                )
                for dead in rejects:
                    await dead_letter_topic.send(
                        key=dead.key, value=dead.original, headers=dead.headers()
                    )
                for key, value in snapshot_writes.items():
                    snapshot_table[key] = value
                for alert in alerts:
                    await alerts_topic.send(key=alert.fingerprint.encode(), value=_json(alert))

    def detect_batch(
        partition: int, messages: list[RawMessage]
    ) -> tuple[list[DeadLetter], list[Alert], dict[str, Any]]:
        """Decoding, detection and the ring buffer of recent telemetry, off the event loop.

        Messages the partition's restored snapshot already holds (replayed after a restart or
        a rebalance) are skipped, so no detector counts a query twice. An alert leaves with its
        subject's latest queries, which evidence snapshots keep.
        """
        decoded = decode_batch(pipelines.fresh(partition, messages), worker.max_record_bytes)
        alerts, writes = pipelines.update(
            partition, decoded.records, through_offset=messages[-1].offset
        )
        return decoded.rejects, attach_recent(recent, decoded.records, alerts), writes

    @app.agent(alerts_topic)
    async def respond(stream: faust.StreamT[bytes]) -> None:
        async for payload in stream:
            await publish(await engine.handle(Alert.model_validate_json(payload)))

    @app.agent(commands_topic)
    async def decide(stream: faust.StreamT[bytes]) -> None:
        async for payload in stream:
            try:
                command = EngineCommand.model_validate_json(payload).root
            except ValidationError as exc:
                _LOG.error("ignored an invalid command on %s: %s", topics.commands, exc)
                continue
            out = await engine.command(command)
            for refusal in out.refusals:
                _LOG.warning("command %s refused: %s", command.command_id, refusal)
            await publish(out)

    if settings.paging.slack_signing_secret is not None:
        signing_secret = settings.paging.slack_signing_secret

        async def send_command(key: bytes, value: bytes) -> None:
            await (await commands_topic.send(key=key, value=value))

        class SlackActions(View):
            """POST /slack/actions: Slack's interactivity request URL (approval buttons)."""

            async def post(self, request: Request) -> Response:
                status, body = await handle_slack_action(
                    await request.read(), request.headers, signing_secret, send_command, clock
                )
                return self.json(body, status=status)

        app.page("/slack/actions")(SlackActions)

    async def tick() -> None:
        """Once a second: waits that ended, approval timeouts, quiet-period resolves. Only the
        worker that owns the single alerts partition owns the incidents."""
        if TP(topics.alerts, 0) in app.assignor.assigned_actives():
            await publish(await engine.tick())

    app.timer(1.0, name="mlwarden.tick")(tick)  # app.timer is untyped: applied, not decorated

    @app.on_before_shutdown.connect
    async def _close_responders(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        await responders.aclose()

    @app.on_partitions_revoked.connect
    def _forget_revoked(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        revoked: set[TP] = args[0] if args else kwargs["revoked"]
        pipelines.revoke(tp.partition for tp in revoked if tp.topic == topics.telemetry)

    if watchdog is not None:
        watch_for_stalls(app, watchdog, settings)

    return app


def watch_for_stalls(app: faust.App, watchdog: StallWatchdog, settings: Settings) -> None:
    """Every `check_interval_s(watchdog.timeout_s)`, read the group's committed offsets on the
    partitions of `app`'s source topics it holds; on a stall, log it and stop (SIGTERM, Faust's
    clean shutdown). The offsets are read on a thread: kafka-python's client is blocking."""
    topics = settings.kafka.topics
    sources = (topics.telemetry, topics.alerts, topics.commands)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlwarden-watchdog")

    async def check() -> None:
        if watchdog.stall is not None:  # already stopping
            return
        if app.rebalancing or app.in_recovery:  # no commits expected until the worker is ready
            watchdog.restart()
            return
        actives = app.assignor.assigned_actives()
        held = {(tp.topic, tp.partition) for tp in actives if tp.topic in sources}
        read = partial(group_positions, settings.kafka.bootstrap, settings.worker.app_id)
        try:
            positions = await loop().run_in_executor(reader, read, sources, held) if held else {}
        except (BrokerError, KafkaError) as exc:  # the broker will be back; so will the check
            _LOG.warning("the stall watchdog could not read committed offsets: %s", exc)
            return
        stall = watchdog.check(positions, time.monotonic())
        if stall is not None:
            _LOG.critical("%s", stall)
            os.kill(os.getpid(), SIGTERM)

    interval_s = check_interval_s(watchdog.timeout_s)
    app.timer(interval_s, name="mlwarden.stall-watchdog")(check)  # untyped, as tick's

    @app.on_partitions_assigned.connect
    def _restart_stall_clocks(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        watchdog.restart()


def _by_partition(events: Sequence[EventT[bytes]]) -> dict[TP, list[EventT[bytes]]]:
    grouped: dict[TP, list[EventT[bytes]]] = defaultdict(list)
    for event in events:
        grouped[event.message.tp].append(event)
    return grouped


def _raw_message(tp: TP, event: EventT[bytes]) -> RawMessage:
    message = event.message
    return RawMessage(
        value=message.value or b"",  # a tombstone (null value) is dead-lettered as empty
        key=message.key,
        topic=tp.topic,
        partition=tp.partition,
        offset=message.offset,
    )


def _json(alert: Alert) -> bytes:
    return alert.model_dump_json().encode()
