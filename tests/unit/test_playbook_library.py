"""The shipped library, dry-run over real alerts (backtest output of `mlwarden simulate`
scenarios, committed under tests/data/alerts/) through the real engine."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from mlwarden.playbooks.dryrun import AlertOutcome, DryCall, describe, dry_run
from mlwarden.playbooks.loader import load_playbooks
from mlwarden.playbooks.shipped import library_dir
from mlwarden.schemas.alert import Alert, Severity

ALERTS = Path(__file__).parents[1] / "data" / "alerts"
LIBRARY = load_playbooks(library_dir())


def alerts(name: str) -> list[Alert]:
    lines = (ALERTS / name).read_text().splitlines()
    return [Alert.model_validate_json(line) for line in lines if line.strip()]


def calls(outcomes: list[AlertOutcome], playbook: str) -> list[DryCall]:
    return [
        call
        for o in outcomes
        for call in o.calls
        if call.playbook == playbook and call.change is None
    ]


def test_the_library_has_the_playbooks_the_issue_asks_for() -> None:
    assert [p.name for p in LIBRARY] == [
        "abuse-query-budget",
        "bad-rollout",
        "confidence-shift",
        "data-drift",
        "evasion-campaign",
        "model-extraction",
        "sybil-extraction",
    ]


async def test_model_extraction_throttles_snapshots_and_pages_once_per_client() -> None:
    stream = [a for a in alerts("extraction_jacobian.alerts.jsonl") if a.kind == "extraction"]
    outcomes = await dry_run(LIBRARY, stream)
    assert all(o.matched == ["model-extraction"] for o in outcomes)
    made = calls(outcomes, "model-extraction")
    groups = {(a.client_id, a.model_id, a.model_version) for a in stream}
    assert len(groups) < len(stream)  # detectors agreeing on one client: one incident
    assert sorted(c.step_type for c in made) == sorted(
        ["rate_limit", "snapshot_evidence", "page"] * len(groups)
    )
    limit = next(c for c in made if c.step_type == "rate_limit")
    assert limit.params["action"] == "throttle"
    assert limit.params["limit_per_minute"] == 10
    assert limit.params["reason"].startswith("model extraction suspected by ")
    page = next(c for c in made if c.step_type == "page")
    assert "Possible model extraction of digits-mlp" in page.params["message"]


async def test_sybil_extraction_limits_the_whole_cluster() -> None:
    alert = Alert.model_validate_json((ALERTS / "blacklight_sybil.alert.json").read_text())
    [outcome] = await dry_run(LIBRARY, [alert])
    assert outcome.matched == ["sybil-extraction"]  # not model-extraction: labels.pattern
    limit, snapshot, page = outcome.calls
    assert (limit.step_type, limit.params["scope"], limit.params["action"]) == (
        "rate_limit",
        "cluster",
        "block",
    )
    assert snapshot.step_type == "snapshot_evidence"
    assert "6 client ids act as one campaign" in page.params["message"]
    assert page.params["severity"] == "critical"


async def test_a_sign_step_ring_is_blocked_as_one_sybil_cluster() -> None:
    alert = Alert.model_validate_json((ALERTS / "sybil_steps.alert.json").read_text())
    [outcome] = await dry_run(LIBRARY, [alert])
    assert outcome.matched == ["sybil-extraction"]
    limit, _, page = outcome.calls
    assert (limit.params["scope"], limit.params["action"]) == ("cluster", "block")
    ring = alert.evidence["client_ids"]
    assert f"{len(ring)} client ids act as one campaign" in page.params["message"]


async def test_data_drift_snapshots_the_model_and_tickets_then_pages_when_critical() -> None:
    stream = [a for a in alerts("drift_sudden.alerts.jsonl") if a.kind == "drift"]
    outcomes = await dry_run(LIBRARY, stream)
    made = calls(outcomes, "data-drift")
    assert made[0].step_type == "snapshot_evidence"
    assert made[0].params["subject"] == "model"
    assert made[1].step_type == "notify"
    # The drift alerts of this scenario are critical: the escalation pages, once per incident.
    incidents = {c.incident_id for c in made}
    pages = [c for c in made if c.step_type == "page"]
    assert {a.severity for a in stream} == {Severity.CRITICAL}
    assert len(pages) == len(incidents)
    assert all("/data-drift/escalation-0/" in p.idempotency_key for p in pages)


async def test_confidence_shift_is_a_ticket() -> None:
    stream = [a for a in alerts("drift_sudden.alerts.jsonl") if a.kind == "confidence_shift"]
    outcomes = await dry_run(LIBRARY, stream)
    assert [o.matched for o in outcomes] == [["confidence-shift"]]
    assert [c.step_type for c in outcomes[0].calls] == ["notify"]


async def test_critical_bad_rollout_rolls_back_at_once_and_inhibits_drift_warnings() -> None:
    stream = alerts("poisoned_rollout.alerts.jsonl")
    [rollout] = [a for a in stream if a.labels.get("rollout") == "regression"]
    assert rollout.severity is Severity.CRITICAL
    follow = rollout.model_copy(
        update={
            "alert_id": "drift-after",
            "fingerprint": "drift-after",
            "detector": "mmd_drift",
            "labels": {},
            "severity": Severity.WARNING,
        }
    )
    outcomes = await dry_run(LIBRARY, [rollout, follow])
    assert [c.step_type for c in outcomes[0].calls] == [
        "snapshot_evidence",
        "page",
        "rollback_model",
    ]
    assert outcomes[0].calls[2].params["to_version"] == "previous"
    assert "Rolling back automatically" in outcomes[0].calls[1].params["message"]
    assert outcomes[1].calls == []
    assert [s.reason for s in outcomes[1].output.suppressed] == ["inhibited"]


async def test_a_warning_rollout_waits_for_approval_before_rolling_back() -> None:
    [rollout] = [a for a in alerts("poisoned_rollout.alerts.jsonl") if a.labels.get("rollout")]
    warning = rollout.model_copy(update={"severity": Severity.WARNING})
    [outcome] = await dry_run(LIBRARY, [warning])
    assert [c.step_type for c in outcome.calls] == ["snapshot_evidence", "page"]
    [summary] = outcome.output.incidents
    waiting = [s for s in summary.steps if s.awaiting_approval]
    assert [(s.step_type, s.index) for s in waiting] == [("require_approval", 2)]
    assert waiting[0].waiting_until == summary.opened_at + timedelta(hours=2)


async def test_evasion_alerts_page_once_per_model_and_snapshot() -> None:
    stream = [a for a in alerts("sybil_extraction.head.alerts.jsonl") if a.kind == "evasion"]
    stream += [a for a in alerts("poisoned_rollout.alerts.jsonl") if a.kind == "evasion"]
    outcomes = await dry_run(LIBRARY, stream)
    made = calls(outcomes, "evasion-campaign")
    models = {a.model_id for a in stream}
    assert [c.step_type for c in made] == ["page", "snapshot_evidence"] * len(models)
    repeats = [c for o in outcomes for c in o.calls if c.change is not None]
    assert repeats == []  # repeat_interval 30m: the stream spans a few minutes


async def test_the_abuse_playbook_pages_query_budget_alerts() -> None:
    golden = (ALERTS.parent / "abuse_stream.alerts.jsonl").read_text().splitlines()
    stream = [  # golden alerts leave out the wall-clock emitted_at
        Alert.model_validate(row | {"emitted_at": row["detected_at"]})
        for row in map(json.loads, golden)
        if row["detector"] == "query_budget"
    ]
    outcomes = await dry_run(LIBRARY, stream)
    assert {tuple(o.matched) for o in outcomes} == {("abuse-query-budget",)}
    pages = calls(outcomes, "abuse-query-budget")
    assert len(pages) == len({a.fingerprint for a in stream})
    text = "\n".join(line for o in outcomes for line in describe(o))
    assert "abuse-query-budget/0 page: succeeded" in text
