"""The CLI's offline commands: backtest on a golden stream, config show, schema export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlwarden.schemas.alert import Alert
from mlwarden.schemas.dead_letter import DeadLetter
from mlwarden.schemas.errors import RejectReason
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.cli import app

DATA = Path(__file__).parents[1] / "data"
BUDGET_ENV = {
    "MLWARDEN_DETECTORS__QUERY_BUDGET__RATE_PER_MINUTE": "120",
    "MLWARDEN_DETECTORS__QUERY_BUDGET__BURST": "60",
}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return CliRunner()


def test_backtest_reproduces_the_golden_alerts(runner: CliRunner, tmp_path: Path) -> None:
    alerts_out, rejects_out = tmp_path / "alerts.jsonl", tmp_path / "rejects.jsonl"
    result = runner.invoke(
        app,
        [
            "backtest",
            str(DATA / "abuse_stream.jsonl"),
            "--alerts-out",
            str(alerts_out),
            "--rejects-out",
            str(rejects_out),
        ],
        env=BUDGET_ENV,
    )
    assert result.exit_code == 0, result.output
    got = [
        Alert.model_validate_json(line).model_dump(mode="json", exclude={"emitted_at"})
        for line in alerts_out.read_text().splitlines()
    ]
    expected = [
        json.loads(line) for line in (DATA / "abuse_stream.alerts.jsonl").read_text().splitlines()
    ]
    assert got == expected
    rejects = [
        DeadLetter.model_validate_json(line) for line in rejects_out.read_text().splitlines()
    ]
    assert [r.reason for r in rejects] == [
        RejectReason.INVALID_JSON,
        RejectReason.INVALID_TIMESTAMP,
        RejectReason.INVALID_FIELD,
        RejectReason.NOT_AN_OBJECT,
        RejectReason.NOT_UTF8,
    ]
    lines = (DATA / "abuse_stream.jsonl").read_bytes().splitlines()
    assert all(lines[r.source_offset - 1] == r.original for r in rejects if r.source_offset)
    assert "716 records, 5 rejected, 2 alerts" in result.output


def test_backtest_is_unchanged_by_the_input_order(runner: CliRunner, tmp_path: Path) -> None:
    lines = (DATA / "abuse_stream.jsonl").read_bytes().splitlines()
    shuffled = tmp_path / "reversed.jsonl"
    shuffled.write_bytes(b"\n".join(reversed(lines)) + b"\n")
    out = tmp_path / "alerts.jsonl"
    result = runner.invoke(
        app, ["backtest", str(shuffled), "--alerts-out", str(out)], env=BUDGET_ENV
    )
    assert result.exit_code == 0, result.output
    expected = (DATA / "abuse_stream.alerts.jsonl").read_text().splitlines()
    assert [json.loads(line)["fingerprint"] for line in out.read_text().splitlines()] == [
        json.loads(line)["fingerprint"] for line in expected
    ]


def test_config_show_masks_secrets_and_reads_nested_variables(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["config", "show"],
        env={
            "MLWARDEN_PAGING__SLACK_TOKEN": "xoxb-very-secret",
            "MLWARDEN_PAGING__SLACK_CHANNEL": "C0SECURITY",
            "MLWARDEN_RATE_LIMIT__REDIS_URL": "redis://:hunter2@redis-1:6379/0",
            "MLWARDEN_KAFKA__BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
            "MLWARDEN_DETECTORS__QUERY_BUDGET__MODELS": json.dumps(
                {"llm": {"rate_per_minute": 30, "burst": 10}}
            ),
        },
    )
    assert result.exit_code == 0, result.output
    assert "xoxb-very-secret" not in result.output
    assert "hunter2" not in result.output
    shown = json.loads(result.output)
    assert shown["paging"]["slack_token"] == "**********"
    assert shown["kafka"]["bootstrap"] == "kafka-1:9092,kafka-2:9092"
    assert shown["detectors"]["query_budget"]["models"]["llm"] == {
        "rate_per_minute": 30.0,
        "burst": 10,
    }


def test_a_bad_variable_is_named_in_the_error(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["config", "show"], env={"MLWARDEN_DETECTORS__ENABLED": '["query_budget", "pradaa"]'}
    )
    assert result.exit_code == 2
    assert "MLWARDEN_DETECTORS__ENABLED" in result.output
    assert "unknown detector" in result.output


def test_schema_export_writes_the_committed_files(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "export", str(tmp_path / "json")])
    assert result.exit_code == 0, result.output
    committed = Path(__file__).parents[2] / "schemas" / "json"
    for path in committed.glob("*.json"):
        assert (tmp_path / "json" / path.name).read_text() == path.read_text()


def test_simulate_writes_telemetry_and_its_ground_truth(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = runner.invoke(
        app, ["simulate", "evasion", "--out", str(out), "--seed", "3", "--duration", "120"]
    )
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "run.truth.json").read_text())
    assert truth["scenario"] == "evasion"
    lines = out.read_text().splitlines()
    assert len(lines) > 1000
    assert all(TelemetryRecord.model_validate_json(line) for line in lines[:50])


def test_simulate_refuses_an_unknown_scenario(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "nope", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2
