"""`mlwarden playbooks | incidents | silence`: write, test and operate playbooks.

- `playbooks lint DIR` and `playbooks test PLAYBOOK --alert A.json` work offline: lint loads
  with the engine's own loader; test runs the real engine with recording responders.
- `incidents` and `silence` talk to the worker through Kafka: `list`/`show` read the compacted
  `mlwarden.incidents` topic to its end; `approve`/`reject`/`resolve`/`ack` and silence changes
  publish an `EngineCommand` to `mlwarden.commands`, which the worker's engine applies. A
  command carries a fresh id, so a retried publish is applied once. `silence list` folds the
  silence commands on `mlwarden.commands` (silences last hours, far below topic retention).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol

import typer
from pydantic import ValidationError
from rich.console import Console

from mlwarden.playbooks.dryrun import describe, dry_run
from mlwarden.playbooks.loader import load_playbooks
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.duration import parse_duration
from mlwarden.schemas.errors import PlaybookError
from mlwarden.schemas.incident import (
    AcknowledgeCommand,
    ApproveCommand,
    Command,
    EngineCommand,
    IncidentSummary,
    RejectCommand,
    ResolveCommand,
    Silence,
    SilenceAddCommand,
    SilenceMatcher,
    SilenceRemoveCommand,
)
from mlwarden.streams.settings import Settings

playbooks_app = typer.Typer(help="Write and test playbooks.", no_args_is_help=True)
incidents_app = typer.Typer(help="See and decide incidents.", no_args_is_help=True)
silence_app = typer.Typer(help="Silence matching alerts for a while.", no_args_is_help=True)
_err = Console(stderr=True)


class CommandChannel(Protocol):
    """How the CLI reaches the worker: the two topics, read to their end or appended to."""

    def summaries(self) -> list[IncidentSummary | None]: ...
    def commands(self) -> list[Command]: ...
    def send(self, command: Command) -> None: ...


class KafkaChannel:
    """`CommandChannel` over Kafka (kafka-python; no consumer group, nothing committed)."""

    def __init__(self, settings: Settings) -> None:
        self._bootstrap = settings.kafka.bootstrap
        self._topics = settings.kafka.topics

    def _read(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            consumer_timeout_ms=1500,
        )
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            if not partitions:
                return []
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(partitions)
            records: list[tuple[bytes | None, bytes | None]] = []
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                batch = consumer.poll(timeout_ms=1000)
                if not batch:
                    break
                for messages in batch.values():
                    records += [(m.key, m.value) for m in messages]
            return records
        finally:
            consumer.close()

    def summaries(self) -> list[IncidentSummary | None]:
        latest: dict[bytes | None, IncidentSummary | None] = {}
        for key, value in self._read(self._topics.incidents):
            latest[key] = None if value is None else IncidentSummary.model_validate_json(value)
        return list(latest.values())

    def commands(self) -> list[Command]:
        return [
            EngineCommand.model_validate_json(value).root
            for _, value in self._read(self._topics.commands)
            if value is not None
        ]

    def send(self, command: Command) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        try:
            key = getattr(command, "incident_id", None) or command.command_id
            value = EngineCommand(command).model_dump_json().encode()
            producer.send(self._topics.commands, key=key.encode(), value=value).get(timeout=30)
        finally:
            producer.close()


def _kafka_channel() -> CommandChannel:
    try:
        return KafkaChannel(Settings())
    except ValidationError as exc:
        _err.print(f"[red]config error[/red]: {exc}")
        raise typer.Exit(2) from None


channel_factory: Callable[[], CommandChannel] = _kafka_channel
"""Replaced in tests by an in-memory channel; everything else goes through Kafka."""

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 - replaced in tests


def _ids() -> tuple[str, datetime]:
    return uuid.uuid4().hex, clock()


# --- playbooks ---------------------------------------------------------------------------


@playbooks_app.command("lint")
def lint(path: Annotated[Path, typer.Argument(help="A playbook file or a directory.")]) -> None:
    """Check playbooks: every problem with file:line:col, field path and a hint; exit 1 if any."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if path.is_dir()
        else [path]
    )
    problems = 0
    for file in files:
        try:
            load_playbooks(file)
        except PlaybookError as error:
            problems += 1
            typer.echo(str(error))
    if problems == 0:
        try:
            names = [playbook.name for playbook in load_playbooks(path)]
        except PlaybookError as error:  # e.g. two files defining one name
            typer.echo(str(error))
            raise typer.Exit(1) from None
        typer.echo(f"ok: {len(names)} playbook(s): {', '.join(names)}")
        return
    _err.print(f"{problems} of {len(files)} file(s) have problems")
    raise typer.Exit(1)


def _read_alerts(path: Path, many: bool) -> list[Alert]:
    text = path.read_text(encoding="utf-8")
    try:
        if not many:
            return [Alert.model_validate_json(text)]
        return [Alert.model_validate_json(line) for line in text.splitlines() if line.strip()]
    except ValidationError as exc:
        _err.print(f"[red]{path}[/red] does not hold valid alert JSON: {exc}")
        raise typer.Exit(2) from None


@playbooks_app.command("test")
def dry_run_command(
    path: Annotated[Path, typer.Argument(help="A playbook file or a directory.")],
    alert: Annotated[Path | None, typer.Option("--alert", help="One alert (JSON).")] = None,
    alerts: Annotated[
        Path | None, typer.Option("--alerts", help="A stream of alerts (JSON lines).")
    ] = None,
) -> None:
    """Dry run: which playbooks match, the incident grouping, every step with rendered params.

    Nothing outside is called: responders only record what they were given.
    """
    if alert is None and alerts is None:
        _err.print("give --alert ALERT.json and/or --alerts STREAM.jsonl")
        raise typer.Exit(2)
    try:
        playbooks = load_playbooks(path)
    except PlaybookError as error:
        typer.echo(str(error))
        raise typer.Exit(1) from None
    stream = (_read_alerts(alert, False) if alert else []) + (
        _read_alerts(alerts, True) if alerts else []
    )
    for outcome in asyncio.run(dry_run(playbooks, stream)):
        typer.echo("\n".join(describe(outcome)))


# --- incidents ---------------------------------------------------------------------------


def _summaries() -> list[IncidentSummary]:
    return [s for s in channel_factory().summaries() if s is not None]


@incidents_app.command("list")
def list_incidents(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved incidents.")] = False,
) -> None:
    """Incidents, newest first (open and acknowledged ones unless --all)."""
    shown = [s for s in _summaries() if all_ or s.status.value != "resolved"]
    for s in sorted(shown, key=lambda s: s.updated_at, reverse=True):
        waiting = sum(step.awaiting_approval for step in s.steps)
        approval = f"  {waiting} awaiting approval" if waiting else ""
        typer.echo(
            f"{s.incident_id}  {s.status.value:<12} {s.severity.value:<8} {s.kind.value}/"
            f"{s.detector}  model {s.model_id} v{s.model_version}  client {s.client_id or '-'}"
            f"  alerts {s.alert_count}  {', '.join(s.playbooks)}{approval}"
        )
    if not shown:
        typer.echo("no incidents")


@incidents_app.command("show")
def show(incident_id: str) -> None:
    """One incident with every step's state, as JSON."""
    for summary in _summaries():
        if summary.incident_id == incident_id:
            typer.echo(summary.model_dump_json(indent=2))
            return
    _err.print(f"no incident {incident_id!r} on the incidents topic")
    raise typer.Exit(1)


def _send(command: Command) -> None:
    channel_factory().send(command)
    typer.echo(f"sent {command.type} ({command.command_id}); the worker applies it")


By = Annotated[str, typer.Option("--by", help="Who decides (recorded in the incident).")]
StepOpt = Annotated[int | None, typer.Option("--step", help="Step index, if several wait.")]
PlaybookOpt = Annotated[str | None, typer.Option("--playbook", help="Playbook of the step.")]
CommentOpt = Annotated[str, typer.Option("--comment")]


def _decide(
    kind: type[ApproveCommand | RejectCommand],
    incident_id: str,
    by: str,
    step: int | None,
    playbook: str | None,
    comment: str,
) -> None:
    """Send the approval or rejection of the step waiting for a human."""
    command_id, now = _ids()
    _send(
        kind(
            command_id=command_id,
            issued_at=now,
            by=by,
            incident_id=incident_id,
            step=step,
            playbook=playbook,
            comment=comment,
        )
    )


@incidents_app.command("approve")
def approve(
    incident_id: str,
    by: By,
    step: StepOpt = None,
    playbook: PlaybookOpt = None,
    comment: CommentOpt = "",
) -> None:
    """Approve the step waiting for a human: the steps after it run."""
    _decide(ApproveCommand, incident_id, by, step, playbook, comment)


@incidents_app.command("reject")
def reject(
    incident_id: str,
    by: By,
    step: StepOpt = None,
    playbook: PlaybookOpt = None,
    comment: CommentOpt = "",
) -> None:
    """Reject the step waiting for a human: the steps after it never run."""
    _decide(RejectCommand, incident_id, by, step, playbook, comment)


@incidents_app.command("resolve")
def resolve(incident_id: str, by: By, comment: CommentOpt = "") -> None:
    """Close the incident: pages are resolved, waiting steps dropped."""
    command_id, now = _ids()
    _send(
        ResolveCommand(
            command_id=command_id, issued_at=now, by=by, incident_id=incident_id, comment=comment
        )
    )


@incidents_app.command("ack")
def ack(incident_id: str, by: By) -> None:
    """Acknowledge: you have it (pages are acknowledged; steps keep running)."""
    command_id, now = _ids()
    _send(AcknowledgeCommand(command_id=command_id, issued_at=now, by=by, incident_id=incident_id))


# --- silences ----------------------------------------------------------------------------


def _matcher(text: str) -> SilenceMatcher:
    field, sep, pattern = text.partition("=")
    try:
        if not sep:
            raise ValueError("no '='")
        return SilenceMatcher(field=field.strip(), pattern=pattern.strip())
    except (ValueError, ValidationError):
        raise typer.BadParameter(
            f"{text!r}: write FIELD=GLOB with FIELD one of kind, detector, severity, model_id, "
            "model_version, client_id, fingerprint, labels.NAME (e.g. client_id=acct-*)"
        ) from None


@silence_app.command("add")
def silence_add(
    match: Annotated[list[str], typer.Option("--match", help="FIELD=GLOB; repeat for more.")],
    for_: Annotated[str, typer.Option("--for", help="How long, e.g. 2h.")],
    by: By = "cli",
    comment: CommentOpt = "",
) -> None:
    """Drop alerts matching every --match for a while (no incident, no steps)."""
    matchers = [_matcher(m) for m in match]
    try:
        length = parse_duration(for_)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    command_id, now = _ids()
    silence = Silence(
        silence_id=f"s-{command_id[:12]}",
        matchers=matchers,
        starts_at=now,
        ends_at=now + length,
        created_by=by,
        comment=comment,
    )
    _send(SilenceAddCommand(command_id=command_id, issued_at=now, by=by, silence=silence))
    typer.echo(f"silence {silence.silence_id} until {silence.ends_at.isoformat()}")


def active_silences(commands: list[Command], now: datetime) -> list[Silence]:
    """Silences added and not removed, not yet ended, by the commands in order."""
    silences: dict[str, Silence] = {}
    for command in commands:
        if isinstance(command, SilenceAddCommand):
            silences[command.silence.silence_id] = command.silence
        elif isinstance(command, SilenceRemoveCommand):
            silences.pop(command.silence_id, None)
    return [s for s in silences.values() if s.ends_at > now]


@silence_app.command("list")
def silence_list() -> None:
    """Silences in effect."""
    shown = active_silences(channel_factory().commands(), clock())
    for s in shown:
        matchers = " ".join(f"{m.field}={m.pattern}" for m in s.matchers)
        typer.echo(
            f"{s.silence_id}  until {s.ends_at.isoformat()}  {matchers}  by {s.created_by}"
            + (f"  # {s.comment}" if s.comment else "")
        )
    if not shown:
        typer.echo("no silences")


@silence_app.command("remove")
def silence_remove(silence_id: str, by: By = "cli") -> None:
    """End a silence now."""
    command_id, now = _ids()
    _send(SilenceRemoveCommand(command_id=command_id, issued_at=now, by=by, silence_id=silence_id))
