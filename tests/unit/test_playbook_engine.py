"""Playbook engine: each effect once per incident (across alerts, crashes and restarts),
grouping, escalation, parking (wait, approval), resolution with follow-ups, silences,
inhibition and expiry. Responders here are small in-memory classes: the unit boundary."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from mlwarden.playbooks.engine import PlaybookEngine
from mlwarden.playbooks.loader import parse_playbook
from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.reload import PlaybookSet
from mlwarden.responders.base import IncidentChange, StepContext, StepResult
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ResponderError
from mlwarden.schemas.incident import (
    AcknowledgeCommand,
    ApproveCommand,
    IncidentStatus,
    RejectCommand,
    ResolveCommand,
    Silence,
    SilenceAddCommand,
    SilenceMatcher,
    SilenceRemoveCommand,
)

T0 = datetime(2026, 11, 23, 14, 5, tzinfo=UTC)


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "fp-1",
        "kind": AlertKind.ABUSE,
        "detector": "query_budget",
        "severity": Severity.WARNING,
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": "c-42",
        "detected_at": T0,
        "emitted_at": T0,
        "score": 180.0,
        "threshold": 60.0,
        "summary": "client c-42 sent 30 queries",
    }
    return Alert(**(fields | changes))


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class Recorder:
    """A responder that records every call and follow-up, and fails on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[BaseModel, str]] = []
        self.follow_ups: list[tuple[IncidentChange, str, StepResult]] = []
        self.fail_with: ResponderError | None = None
        self.failures_left = 0

    async def __call__(self, params: BaseModel, ctx: StepContext) -> StepResult:
        await asyncio.sleep(0)  # yield, as a real call would, so handles can interleave
        if self.fail_with is not None and self.failures_left != 0:
            self.failures_left -= 1
            raise self.fail_with
        self.calls.append((params, ctx.idempotency_key))
        return {"call": len(self.calls)}

    async def follow_up(
        self, ctx: StepContext, earlier: StepResult, change: IncidentChange
    ) -> StepResult:
        self.follow_ups.append((change, ctx.idempotency_key, earlier))
        return {"followed": change.value}

    def fail(self, error: ResponderError, times: int = -1) -> None:
        self.fail_with, self.failures_left = error, times


def book(text: str) -> Playbook:
    return parse_playbook(text)


SIMPLE = """
name: abuse
match: {kinds: [abuse]}
steps:
  - rate_limit: {action: block}
  - page: {message: "hi {{ alert.client_id }}"}
"""


class Harness:
    def __init__(self, *playbooks: Playbook, incidents: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.incidents: dict[str, Any] = {} if incidents is None else incidents
        self.responders = {
            name: Recorder()
            for name in ("rate_limit", "snapshot_evidence", "page", "notify", "rollback_model")
        }
        self.engine = PlaybookEngine(list(playbooks), self.responders, self.incidents, self.clock)

    def calls(self, step_type: str) -> list[str]:
        return [key for _, key in self.responders[step_type].calls]


def states(records: list[ActionRecord]) -> list[tuple[str, str]]:
    return [(r.step_type, r.state.value) for r in records]


async def test_steps_run_in_order_and_every_change_is_recorded() -> None:
    h = Harness(book(SIMPLE))
    out = await h.engine.handle(make_alert())
    assert states(out.actions) == [
        ("rate_limit", "running"),
        ("rate_limit", "succeeded"),
        ("page", "running"),
        ("page", "succeeded"),
    ]
    assert [r.idempotency_key for r in out.actions[::2]] == ["fp-1/abuse/0", "fp-1/abuse/1"]
    assert out.actions[3].result == {"call": 1}
    [(params, _)] = h.responders["page"].calls
    assert params.message == "hi c-42"  # type: ignore[attr-defined]
    [summary] = out.incidents
    assert summary.incident_id == "fp-1"
    assert summary.status is IncidentStatus.OPEN
    assert [s.state for s in summary.steps] == [StepState.SUCCEEDED, StepState.SUCCEEDED]


async def test_non_matching_alerts_do_nothing() -> None:
    h = Harness(book(SIMPLE))
    out = await h.engine.handle(make_alert(kind=AlertKind.DRIFT))
    assert out.actions == []
    assert out.incidents == []
    assert h.incidents == {}


async def test_one_effect_per_incident_across_repeats_replays_and_restarts() -> None:
    h = Harness(book(SIMPLE))
    await h.engine.handle(make_alert())
    assert (await h.engine.handle(make_alert())).actions == []  # replayed
    assert (await h.engine.handle(make_alert(alert_id="a-2"))).actions == []  # same incident
    restored = json.loads(json.dumps(h.incidents))  # the changelog holds JSON only
    again = Harness(book(SIMPLE), incidents=restored)
    assert (await again.engine.handle(make_alert(alert_id="a-3"))).actions == []
    assert again.calls("page") == []
    assert h.calls("page") == ["fp-1/abuse/1"]
    assert restored["fp-1"]["steps"]["abuse/1"]["state"] == "succeeded"
    assert restored["fp-1"]["alert_count"] == 3


async def test_concurrent_alerts_of_one_incident_run_each_step_once() -> None:
    h = Harness(book(SIMPLE))
    await asyncio.gather(*(h.engine.handle(make_alert(alert_id=f"a-{i}")) for i in range(5)))
    assert h.calls("page") == ["fp-1/abuse/1"]
    assert h.calls("rate_limit") == ["fp-1/abuse/0"]


async def test_a_crash_after_running_was_stored_reruns_the_step_with_the_same_key() -> None:
    h = Harness(book(SIMPLE))

    class Crash(BaseException):
        pass

    async def crashing(params: BaseModel, ctx: StepContext) -> StepResult:
        raise Crash

    h.engine._runner._responders = {**h.responders, "page": crashing}  # type: ignore[dict-item]
    with pytest.raises(Crash):
        await h.engine.handle(make_alert())
    snapshot = json.loads(json.dumps(h.incidents))
    assert snapshot["fp-1"]["steps"]["abuse/1"]["state"] == "running"
    after = Harness(book(SIMPLE), incidents=snapshot)
    out = await after.engine.tick()  # no new alert needed: tick resumes interrupted steps
    assert states(out.actions) == [("page", "running"), ("page", "succeeded")]
    assert out.actions[-1].attempt == 2
    assert after.calls("page") == ["fp-1/abuse/1"]
    assert after.calls("rate_limit") == []  # succeeded before the crash: never again


@pytest.mark.parametrize("retryable", [True, False])
async def test_a_failed_step_is_recorded_and_tried_again_on_the_next_alert(
    retryable: bool,
) -> None:
    h = Harness(book(SIMPLE))
    h.responders["rate_limit"].fail(ResponderError("redis down", retryable=retryable))
    out = await h.engine.handle(make_alert())
    failed = out.actions[1]
    assert (failed.state, failed.error, failed.result) == (
        StepState.FAILED,
        "redis down",
        {"retryable": retryable},
    )
    assert h.calls("page") == ["fp-1/abuse/1"]  # on_failure: continue (the default)
    assert (await h.engine.tick()).actions == []  # tick does not retry failures
    h.responders["rate_limit"].fail_with = None
    retried = await h.engine.handle(make_alert(alert_id="a-2"))
    assert [(r.state, r.attempt) for r in retried.actions] == [
        (StepState.RUNNING, 2),
        (StepState.SUCCEEDED, 2),
    ]


async def test_retryable_failures_are_retried_within_the_step() -> None:
    h = Harness(
        book(SIMPLE.replace("{action: block}", "{action: block}\n    retries: 2\n    backoff: 1ms"))
    )
    h.responders["rate_limit"].fail(ResponderError("429", retryable=True), times=2)
    out = await h.engine.handle(make_alert())
    assert states(out.actions)[:2] == [("rate_limit", "running"), ("rate_limit", "succeeded")]


async def test_abort_stops_the_run_until_the_step_succeeds() -> None:
    h = Harness(book(SIMPLE.replace("{action: block}", "{action: block}\n    on_failure: abort")))
    h.responders["rate_limit"].fail(ResponderError("no", retryable=False))
    await h.engine.handle(make_alert())
    assert h.calls("page") == []
    h.responders["rate_limit"].fail_with = None
    await h.engine.handle(make_alert(alert_id="a-2"))
    assert h.calls("page") == ["fp-1/abuse/1"]


async def test_a_hung_responder_times_out_and_fails_the_step() -> None:
    h = Harness(
        book(
            SIMPLE.replace("{action: block}", "{action: block}\n    timeout: 10ms\n    retries: 0")
        )
    )

    async def hang(params: BaseModel, ctx: StepContext) -> StepResult:
        await asyncio.Event().wait()
        return {}

    h.engine._runner._responders = {**h.responders, "rate_limit": hang}  # type: ignore[dict-item]
    out = await h.engine.handle(make_alert())
    assert out.actions[1].state is StepState.FAILED
    assert out.actions[1].error == "rate_limit step timed out after 0.01s"


async def test_when_false_skips_the_step() -> None:
    h = Harness(
        book(
            SIMPLE.replace(
                "{action: block}", "{action: block}\n    when: \"alert.severity == 'critical'\""
            )
        )
    )
    out = await h.engine.handle(make_alert())
    assert states(out.actions)[0] == ("rate_limit", "skipped")
    assert h.calls("rate_limit") == []


GROUPED = """
name: per-client
match: {kinds: [abuse, extraction]}
group_by: [client_id, model_version]
steps:
  - page: {message: "{{ alert.detector }}"}
"""


async def test_group_by_folds_alerts_of_a_client_and_version_into_one_incident() -> None:
    h = Harness(book(GROUPED))
    first = await h.engine.handle(make_alert())
    second = await h.engine.handle(
        make_alert(alert_id="a-2", fingerprint="fp-2", kind=AlertKind.EXTRACTION, detector="prada")
    )
    other = await h.engine.handle(make_alert(alert_id="a-3", fingerprint="fp-3", model_version="4"))
    assert first.incidents[0].incident_id == second.incidents[0].incident_id
    assert second.incidents[0].alert_count == 2
    assert second.incidents[0].group == {"client_id": "c-42", "model_version": "3"}
    assert other.incidents[0].incident_id != first.incidents[0].incident_id
    assert len(h.calls("page")) == 2


ESCALATING = """
name: esc
match: {kinds: [abuse]}
steps:
  - notify: {message: ticket}
escalate:
  - min_severity: critical
    repeated: 3
    within: 10m
    steps:
      - page: {message: "now"}
"""


async def test_escalation_on_repeats_within_the_window_runs_once() -> None:
    h = Harness(book(ESCALATING))
    await h.engine.handle(make_alert())
    await h.engine.handle(make_alert(alert_id="a-2", detected_at=T0 + timedelta(minutes=20)))
    assert h.calls("page") == []  # two alerts, and far apart
    await h.engine.handle(make_alert(alert_id="a-3", detected_at=T0 + timedelta(minutes=25)))
    assert h.calls("page") == []
    out = await h.engine.handle(make_alert(alert_id="a-4", detected_at=T0 + timedelta(minutes=26)))
    assert h.calls("page") == ["fp-1/esc/escalation-0/0"]
    assert ("page", "succeeded") in states(out.actions)
    await h.engine.handle(make_alert(alert_id="a-5", detected_at=T0 + timedelta(minutes=27)))
    assert len(h.calls("page")) == 1
    assert h.calls("notify") == ["fp-1/esc/0"]


async def test_escalation_on_critical_severity() -> None:
    h = Harness(book(ESCALATING))
    await h.engine.handle(make_alert(severity=Severity.CRITICAL))
    assert h.calls("page") == ["fp-1/esc/escalation-0/0"]


async def test_on_failure_escalate_starts_the_escalation() -> None:
    text = ESCALATING.replace("{message: ticket}", "{message: ticket}\n    on_failure: escalate")
    h = Harness(book(text))
    h.responders["notify"].fail(ResponderError("slack down", retryable=False))
    await h.engine.handle(make_alert())
    assert h.calls("page") == ["fp-1/esc/escalation-0/0"]


PARKING = """
name: park
match: {kinds: [abuse]}
steps:
  - snapshot_evidence: {}
  - wait: 10m
  - require_approval: {prompt: "roll back {{ alert.model_id }}?", approvers: [alice]}
    timeout: 1h
  - rollback_model: {}
"""


async def test_wait_parks_without_blocking_and_tick_resumes() -> None:
    h = Harness(book(PARKING))
    out = await h.engine.handle(make_alert())
    assert states(out.actions)[-1] == ("wait", "running")
    h.clock.advance(minutes=9)
    assert (await h.engine.tick()).actions == []
    h.clock.advance(minutes=1)
    out = await h.engine.tick()
    assert states(out.actions) == [("wait", "succeeded"), ("require_approval", "pending")]
    assert out.actions[-1].result["prompt"] == "roll back fraud-v1?"
    assert out.incidents[0].steps[2].awaiting_approval


async def test_approval_by_an_approver_lets_the_rollback_run_once() -> None:
    h = Harness(book(PARKING))
    await h.engine.handle(make_alert())
    h.clock.advance(minutes=10)
    await h.engine.tick()

    def approve(by: str, command_id: str) -> ApproveCommand:
        return ApproveCommand(command_id=command_id, issued_at=T0, by=by, incident_id="fp-1")

    refused = await h.engine.command(approve("mallory", "c-1"))
    assert refused.refusals
    assert "approvers: alice" in refused.refusals[0]
    assert h.calls("rollback_model") == []
    out = await h.engine.command(approve("alice", "c-2"))
    assert states(out.actions) == [
        ("require_approval", "succeeded"),
        ("rollback_model", "running"),
        ("rollback_model", "succeeded"),
    ]
    assert (await h.engine.command(approve("alice", "c-2"))).actions == []  # same command id
    assert h.calls("rollback_model") == ["fp-1/park/3"]


async def test_rejection_and_timeout_end_the_run_for_good() -> None:
    for decide in ("reject", "timeout"):
        h = Harness(book(PARKING))
        await h.engine.handle(make_alert())
        h.clock.advance(minutes=10)
        await h.engine.tick()
        if decide == "reject":
            out = await h.engine.command(
                RejectCommand(command_id="c", issued_at=T0, by="alice", incident_id="fp-1")
            )
        else:
            h.clock.advance(hours=1)
            out = await h.engine.tick()
        assert states(out.actions) == [("require_approval", "failed")]
        await h.engine.handle(make_alert(alert_id="a-2"))  # a new alert does not re-ask
        assert h.calls("rollback_model") == []


async def test_resolve_closes_pages_once_and_drops_parked_steps() -> None:
    h = Harness(book(PARKING.replace("- snapshot_evidence: {}", "- page: {message: x}")))
    await h.engine.handle(make_alert())
    resolve = ResolveCommand(command_id="r", issued_at=T0, by="bob", incident_id="fp-1")
    out = await h.engine.command(resolve)
    assert ("wait", "skipped") in states(out.actions)
    assert ("page#resolved", "succeeded") in states(out.actions)
    [(change, key, earlier)] = h.responders["page"].follow_ups
    assert (change, key, earlier) == (IncidentChange.RESOLVED, "fp-1/park/0#resolved", {"call": 1})
    assert out.incidents[0].status is IncidentStatus.RESOLVED
    assert out.incidents[0].resolved_reason == "resolved by bob"
    assert (await h.engine.command(resolve)).actions == []
    h.clock.advance(hours=1)
    await h.engine.tick()
    assert len(h.responders["page"].follow_ups) == 1


async def test_quiet_period_and_recovery_alerts_resolve() -> None:
    text = SIMPLE + "resolve: {after: 30m}\n"
    h = Harness(book(text))
    await h.engine.handle(make_alert())
    h.clock.advance(minutes=29)
    assert (await h.engine.tick()).incidents == []
    h.clock.advance(minutes=1)
    out = await h.engine.tick()
    assert out.incidents[0].status is IncidentStatus.RESOLVED
    assert out.incidents[0].resolved_reason == "no alert for 0:30:00"

    h2 = Harness(book(text))
    await h2.engine.handle(make_alert())
    out = await h2.engine.handle(make_alert(alert_id="a-r", labels={"status": "resolved"}))
    assert out.incidents[0].resolved_reason == "recovery reported by query_budget"
    assert [c for c, _, _ in h2.responders["page"].follow_ups] == [IncidentChange.RESOLVED]


async def test_after_resolution_realert_keeps_quiet_then_a_new_generation_opens() -> None:
    h = Harness(book(SIMPLE + "realert: 1h\n"))
    await h.engine.handle(make_alert())
    await h.engine.command(ResolveCommand(command_id="r", issued_at=T0, by="b", incident_id="fp-1"))
    h.clock.advance(minutes=30)
    quiet = await h.engine.handle(make_alert(alert_id="a-2"))
    assert quiet.actions == []
    assert quiet.suppressed[0].reason == "realert"
    h.clock.advance(minutes=31)
    assert (await h.engine.handle(make_alert())).actions == []  # a replay of the old alert
    reopened = await h.engine.handle(make_alert(alert_id="a-3"))
    assert reopened.incidents[0].incident_id == "fp-1~2"
    assert h.calls("page") == ["fp-1/abuse/1", "fp-1~2/abuse/1"]


async def test_acknowledge_follows_up_and_repeats_are_rate_limited() -> None:
    h = Harness(book(SIMPLE + "repeat_interval: 10m\n"))
    await h.engine.handle(make_alert())
    await h.engine.handle(make_alert(alert_id="a-2"))
    await h.engine.handle(make_alert(alert_id="a-3"))  # within 10 min of the page itself
    h.clock.advance(minutes=10)
    await h.engine.handle(make_alert(alert_id="a-4"))
    out = await h.engine.command(
        AcknowledgeCommand(command_id="k", issued_at=T0, by="bob", incident_id="fp-1")
    )
    assert out.incidents[0].acknowledged_by == "bob"
    assert [(c.value, k) for c, k, _ in h.responders["page"].follow_ups] == [
        ("repeat", "fp-1/abuse/1#repeat-4"),
        ("acknowledged", "fp-1/abuse/1#acknowledged"),
    ]


async def test_silences_drop_matching_alerts_until_they_end_or_are_removed() -> None:
    h = Harness(book(SIMPLE))
    silence = Silence(
        silence_id="s-1",
        matchers=[SilenceMatcher(field="client_id", pattern="c-4*")],
        starts_at=T0,
        ends_at=T0 + timedelta(hours=2),
        created_by="bob",
    )
    await h.engine.command(
        SilenceAddCommand(command_id="s", issued_at=T0, by="bob", silence=silence)
    )
    out = await h.engine.handle(make_alert())
    assert out.suppressed[0].reason == "silenced"
    assert out.suppressed[0].by == "s-1"
    assert (await h.engine.handle(make_alert(fingerprint="x", client_id="d-1"))).actions
    await h.engine.command(
        SilenceRemoveCommand(command_id="u", issued_at=T0, by="b", silence_id="s-1")
    )
    assert (await h.engine.handle(make_alert(alert_id="a-2"))).actions
    await h.engine.command(
        SilenceAddCommand(command_id="s2", issued_at=T0, by="b", silence=silence)
    )
    h.clock.advance(hours=2)
    await h.engine.tick()
    assert not any(key.startswith("silence:") for key in h.incidents)


async def test_an_open_critical_incident_inhibits_warnings_on_its_model() -> None:
    rollout = book("""
name: rollout
match: {kinds: [drift], labels: {rollout: regression}}
group_by: [model_id]
inhibits: [{severity: warning, same: [model_id]}]
steps: [{page: {message: x}}]
""")
    h = Harness(rollout, book(GROUPED))
    await h.engine.handle(
        make_alert(
            alert_id="r",
            fingerprint="r",
            kind=AlertKind.DRIFT,
            severity=Severity.CRITICAL,
            labels={"rollout": "regression"},
        )
    )
    out = await h.engine.handle(make_alert())
    assert out.suppressed[0].reason == "inhibited"
    assert (await h.engine.handle(make_alert(fingerprint="o", model_id="other"))).actions
    assert (
        await h.engine.handle(
            make_alert(fingerprint="c", client_id="c-7", severity=Severity.CRITICAL)
        )
    ).actions


async def test_closed_incidents_expire_after_retention() -> None:
    h = Harness(book(SIMPLE))
    await h.engine.handle(make_alert())
    await h.engine.command(ResolveCommand(command_id="r", issued_at=T0, by="b", incident_id="fp-1"))
    h.clock.advance(days=6)
    assert (await h.engine.tick()).expired == []
    h.clock.advance(days=1)
    assert (await h.engine.tick()).expired == ["fp-1"]
    assert h.incidents == {}


async def test_commands_for_unknown_incidents_are_refused_not_raised() -> None:
    h = Harness(book(SIMPLE))
    out = await h.engine.command(
        ResolveCommand(command_id="r", issued_at=T0, by="b", incident_id="nope")
    )
    assert out.refusals == ["no incident 'nope'"]


def test_the_engine_refuses_to_start_without_a_responder_it_needs() -> None:
    with pytest.raises(ValueError, match=r"no responder for step type\(s\): rate_limit"):
        PlaybookEngine([book(SIMPLE)], {"page": Recorder()}, {}, Clock())
    with pytest.raises(ValueError, match="unique"):
        PlaybookEngine([book(SIMPLE), book(SIMPLE)], {}, {}, Clock())


async def test_unserved_fail_records_a_failed_step_and_goes_on() -> None:
    page = Recorder()
    engine = PlaybookEngine([book(SIMPLE)], {"page": page}, {}, Clock(), unserved="fail")
    out = await engine.handle(make_alert())
    assert out.actions[1].state is StepState.FAILED
    assert "no rate_limit responder is configured" in (out.actions[1].error or "")
    assert len(page.calls) == 1


async def test_reload_keeps_the_last_good_set(tmp_path: Any) -> None:
    (tmp_path / "a.yaml").write_text(SIMPLE)
    playbooks = PlaybookSet.load(tmp_path)
    (tmp_path / "a.yaml").write_text(SIMPLE.replace("rate_limit", "rate_limt"))
    error = playbooks.reload()
    assert error is not None
    assert "rate_limt" in str(error)
    assert [p.name for p in playbooks.current] == ["abuse"]
    (tmp_path / "b.yaml").write_text(GROUPED)
    (tmp_path / "a.yaml").write_text(SIMPLE)
    assert playbooks.reload() is None
    assert [p.name for p in playbooks.current] == ["abuse", "per-client"]
