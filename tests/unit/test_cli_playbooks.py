"""`playbooks lint/test`, `incidents` and `silence` commands, on typer's CliRunner.

The Kafka transport is replaced by an in-memory channel (the unit boundary); what goes over it
is the real JSON of `EngineCommand` and `IncidentSummary`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlwarden.playbooks.engine import PlaybookEngine
from mlwarden.playbooks.loader import parse_playbook
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.incident import (
    ApproveCommand,
    Command,
    EngineCommand,
    IncidentSummary,
    SilenceAddCommand,
    SilenceRemoveCommand,
)
from mlwarden.streams import cli_playbooks
from mlwarden.streams.cli_playbooks import incidents_app, playbooks_app, silence_app

DATA = Path(__file__).parents[1] / "data"
ROLLOUT = DATA / "alerts" / "poisoned_rollout.alerts.jsonl"
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
runner = CliRunner()


class MemoryChannel:
    """The two topics as lists; commands go through their JSON form, as on Kafka."""

    def __init__(self) -> None:
        self.summary_log: list[IncidentSummary | None] = []
        self.command_log: list[str] = []

    def summaries(self) -> list[IncidentSummary | None]:
        latest: dict[str, IncidentSummary | None] = {}
        for summary in self.summary_log:
            if summary is not None:
                latest[summary.incident_id] = summary
        return list(latest.values())

    def commands(self) -> list[Command]:
        return [EngineCommand.model_validate_json(raw).root for raw in self.command_log]

    def send(self, command: Command) -> None:
        self.command_log.append(EngineCommand(command).model_dump_json())


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> MemoryChannel:
    memory = MemoryChannel()
    monkeypatch.setattr(cli_playbooks, "channel_factory", lambda: memory)
    monkeypatch.setattr(cli_playbooks, "clock", lambda: T0)
    return memory


def test_lint_passes_the_shipped_library() -> None:
    from mlwarden.playbooks.shipped import library_dir

    result = runner.invoke(playbooks_app, ["lint", str(library_dir())])
    assert result.exit_code == 0, result.output
    assert "ok: 7 playbook(s): abuse-query-budget, bad-rollout" in result.output


def test_lint_reports_every_problem_with_position_and_exits_1() -> None:
    folder = DATA / "playbooks" / "invalid"
    result = runner.invoke(playbooks_app, ["lint", str(folder)])
    assert result.exit_code == 1
    assert f"{folder / 'misspelled_field.yaml'}:7:7: steps[0].page.mesage: unknown field" in (
        result.output
    )
    assert f"{folder / 'unknown_step_type.yaml'}:7:5: steps[1]: unknown step type" in (
        result.output
    )
    assert "(did you mean 'rate_limit'?)" in result.output
    assert f"{folder / 'bad_template.yaml'}:8:16:" in result.output


def test_lint_names_bad_detectors_durations_and_conditions(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: p\n"
        "match:\n"
        "  kinds: [extraction]\n"
        "  detectors: [pradaa]\n"
        '  condition: "score >"\n'
        "steps:\n"
        "  - wait: 5 minuets\n"
    )
    result = runner.invoke(playbooks_app, ["lint", str(tmp_path)])
    assert result.exit_code == 1
    out = result.output
    assert f"{tmp_path / 'p.yaml'}:4:15: match.detectors[0]: unknown detector 'pradaa' " in out
    assert "(did you mean 'prada'?)" in out
    assert ":5:14: match.condition: not a JMESPath expression" in out
    assert ":7:11: steps[0].wait: '5 minuets' is not a duration (e.g. \"5m\"" in out


def test_dry_run_prints_matches_grouping_and_rendered_steps() -> None:
    from mlwarden.playbooks.shipped import library_dir

    result = runner.invoke(playbooks_app, ["test", str(library_dir()), "--alerts", str(ROLLOUT)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "matches: bad-rollout" in out
    assert "(model_id=digits-mlp, model_version=2)" in out
    assert "/bad-rollout/3 rollback_model: succeeded" in out
    assert '"to_version": "previous"' in out
    assert "require_approval: skipped" in out


def test_dry_run_with_one_alert_and_a_broken_playbook(tmp_path: Path) -> None:
    alert = tmp_path / "a.json"
    alert.write_text(ROLLOUT.read_text().splitlines()[0])
    (tmp_path / "bad.yaml").write_text("name: x\n")
    bad = runner.invoke(playbooks_app, ["test", str(tmp_path / "bad.yaml"), "--alert", str(alert)])
    assert bad.exit_code == 1
    assert "missing required field 'match'" in bad.output
    assert runner.invoke(playbooks_app, ["test", str(tmp_path / "bad.yaml")]).exit_code == 2


def _summary() -> IncidentSummary:
    """A real summary: the engine's own, for an incident parked on an approval."""
    playbook = parse_playbook(
        "name: gate\nmatch: {kinds: [drift]}\nsteps:\n  - require_approval: {}\n"
        "  - rollback_model: {}\n"
    )

    async def rollback(params: object, ctx: object) -> dict[str, object]:
        return {}

    engine = PlaybookEngine([playbook], {"rollback_model": rollback}, {}, lambda: T0)
    alert = Alert.model_validate_json(ROLLOUT.read_text().splitlines()[1])
    [summary] = asyncio.run(engine.handle(alert)).incidents
    return summary


def test_incidents_list_and_show_read_the_latest_summaries(channel: MemoryChannel) -> None:
    summary = _summary()
    channel.summary_log += [summary, summary.model_copy(update={"alert_count": 3})]
    listed = runner.invoke(incidents_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert summary.incident_id in listed.output
    assert "alerts 3" in listed.output
    assert "1 awaiting approval" in listed.output
    shown = runner.invoke(incidents_app, ["show", summary.incident_id])
    assert IncidentSummary.model_validate_json(shown.output).alert_count == 3
    missing = runner.invoke(incidents_app, ["show", "nope"])
    assert missing.exit_code == 1


def test_approve_publishes_a_command_the_engine_understands(channel: MemoryChannel) -> None:
    result = runner.invoke(
        incidents_app, ["approve", "fp-9", "--by", "alice", "--step", "2", "--comment", "ok"]
    )
    assert result.exit_code == 0, result.output
    [command] = channel.commands()
    assert isinstance(command, ApproveCommand)
    assert (command.incident_id, command.by, command.step, command.comment) == (
        "fp-9",
        "alice",
        2,
        "ok",
    )
    for verb in ("reject", "resolve", "ack"):
        assert runner.invoke(incidents_app, [verb, "fp-9", "--by", "bob"]).exit_code == 0
    assert [c.type for c in channel.commands()] == ["approve", "reject", "resolve", "acknowledge"]
    assert len({c.command_id for c in channel.commands()}) == 4


def test_silence_add_list_remove(channel: MemoryChannel) -> None:
    added = runner.invoke(
        silence_app,
        [
            "add",
            "--match",
            "client_id=acct-*",
            "--match",
            "kind=extraction",
            "--for",
            "2h",
            "--comment",
            "pen test",
        ],
    )
    assert added.exit_code == 0, added.output
    [command] = channel.commands()
    assert isinstance(command, SilenceAddCommand)
    assert command.silence.ends_at == T0 + timedelta(hours=2)
    listed = runner.invoke(silence_app, ["list"])
    assert "client_id=acct-* kind=extraction" in listed.output
    assert "# pen test" in listed.output
    runner.invoke(silence_app, ["remove", command.silence.silence_id])
    assert isinstance(channel.commands()[-1], SilenceRemoveCommand)
    assert "no silences" in runner.invoke(silence_app, ["list"]).output


def test_silence_add_refuses_bad_matchers_and_durations(channel: MemoryChannel) -> None:
    bad_match = runner.invoke(silence_app, ["add", "--match", "clientid=x", "--for", "2h"])
    assert bad_match.exit_code == 2
    assert "FIELD=GLOB" in bad_match.output
    bad_for = runner.invoke(silence_app, ["add", "--match", "client_id=x", "--for", "2 hourz"])
    assert bad_for.exit_code == 2
    assert channel.commands() == []
