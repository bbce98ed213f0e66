"""Walking one incident's playbook runs: each step at most once, every change stored first.

A run is a playbook's steps (or one escalation rule's). Walking it visits the steps in order:

- succeeded and skipped steps are passed over: they are never run again;
- a step found `running` (not parked) was interrupted by a crash: it runs again with the same
  idempotency key, which the responder uses to find its own earlier effect;
- a failed step is tried again when a new alert arrives (not on `tick`), then `on_failure`
  decides: `continue` goes on, `abort` stops the run here, `escalate` starts the playbook's
  escalation runs and goes on. A rejected or timed-out approval always ends its run: what came
  after it must not happen without a human's yes;
- `wait` and `require_approval` park the run (the step stays running/pending with `until`);
  the engine's `tick` and `approve`/`reject` commands pick it up again.

Every state change is saved in the incident store *before* the action record describing it is
returned, so the record stream never claims more than the store knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from mlwarden.playbooks import templates
from mlwarden.playbooks.conditions import holds
from mlwarden.playbooks.followups import FollowUps, step_call
from mlwarden.playbooks.incidents import Incident, IncidentStore, RunStatus, StepEntry
from mlwarden.playbooks.model import Playbook, escalation_run
from mlwarden.playbooks.steps import (
    ApprovalParams,
    OnFailure,
    Step,
    render_params,
)
from mlwarden.playbooks.summaries import due_at, run_names, when_data
from mlwarden.responders.base import (
    IncidentChange,
    Responder,
)
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.errors import ResponderError

_LOG: Final = logging.getLogger(__name__)


@dataclass
class Session:
    """One incident being worked on under its lock: the current value and what was recorded."""

    incident: Incident
    store: IncidentStore
    clock: Callable[[], datetime]
    retention: timedelta
    records: list[ActionRecord] = field(default_factory=list)

    def save(self, **changes: Any) -> None:
        """Replace the stored incident with the current one plus `changes` (and its due time)."""
        now = self.clock()
        updated = self.incident.model_copy(update={**changes, "updated_at": now})
        self.incident = updated.model_copy(update={"due_at": due_at(updated, now, self.retention)})
        self.store.put(self.incident)

    def set_run(self, run: str, status: RunStatus) -> None:
        if self.incident.runs.get(run) != status:
            self.save(runs={**self.incident.runs, run: status})


class StepRunner:
    """Runs steps through the responders; knows nothing of alerts arriving or of Kafka."""

    def __init__(
        self,
        responders: Mapping[str, Responder[Any]],
        playbooks: Callable[[], Mapping[str, Playbook]],
    ) -> None:
        self._responders = responders
        self._playbooks = playbooks
        self._follow = FollowUps(responders, playbooks)

    async def advance(self, session: Session, *, retry_failed: bool) -> None:
        """Walk every run of the incident that may move; escalations started on the way too."""
        for name in list(session.incident.playbooks):
            playbook = self._playbooks().get(name)
            if playbook is None:
                continue
            for run in run_names(playbook):
                status = session.incident.runs.get(run)
                if status is None or (status in ("done", "aborted") and not retry_failed):
                    continue
                await self._walk(session, playbook, run, retry_failed=retry_failed)

    async def _walk(
        self, session: Session, playbook: Playbook, run: str, *, retry_failed: bool
    ) -> None:
        session.set_run(run, "active")
        for index, step in enumerate(playbook.run_steps(run)):
            entry = session.incident.steps.get(f"{run}/{index}")
            if entry is not None:
                if entry.state in (StepState.SUCCEEDED, StepState.SKIPPED):
                    continue
                if entry.parked:
                    if not self._wait_over(session, entry):
                        session.set_run(run, "parked")
                        return
                    self._settle(session, playbook, run, index, StepState.SUCCEEDED, entry.result)
                    continue
                if entry.state is StepState.FAILED and (
                    entry.result.get("final") or not retry_failed
                ):
                    if self._stops(session, playbook, step, entry):
                        session.set_run(run, "aborted")
                        return
                    continue
            outcome = await self._start(session, playbook, run, index, step)
            if outcome == "parked":
                session.set_run(run, "parked")
                return
            if outcome == "failed":
                failed = session.incident.steps[f"{run}/{index}"]
                if self._stops(session, playbook, step, failed):
                    session.set_run(run, "aborted")
                    return
        session.set_run(run, "done")

    def _wait_over(self, session: Session, entry: StepEntry) -> bool:
        """A parked wait whose time came; approvals leave only by command or timeout."""
        assert entry.until is not None
        return not entry.awaiting_approval and session.clock() >= entry.until

    def _stops(self, session: Session, playbook: Playbook, step: Step, entry: StepEntry) -> bool:
        """Apply `on_failure` of a failed step: True when its run must stop here."""
        if step.on_failure is OnFailure.ESCALATE:
            self.escalate(session, playbook)
        return step.on_failure is OnFailure.ABORT or step.step_type == "require_approval"

    def escalate(
        self, session: Session, playbook: Playbook, rules: list[int] | None = None
    ) -> None:
        """Start escalation runs (all rules, or `rules`) that have not started yet."""
        indexes = range(len(playbook.escalate)) if rules is None else rules
        runs = dict(session.incident.runs)
        for index in indexes:
            runs.setdefault(escalation_run(playbook.name, index), "active")
        if runs != session.incident.runs:
            session.save(runs=runs)

    async def _start(
        self, session: Session, playbook: Playbook, run: str, index: int, step: Step
    ) -> str:
        """Run (or park, or skip) one step; returns succeeded, failed, skipped or parked."""
        incident = session.incident
        alert = incident.latest_alert
        previous = incident.steps.get(f"{run}/{index}")
        attempts = (previous.attempts if previous is not None else 0) + 1
        now = session.clock()

        def change(
            state: StepState, result: dict[str, Any], error: str | None, **extra: Any
        ) -> None:
            self._change(
                session,
                playbook,
                run,
                index,
                step,
                state,
                result,
                error,
                attempts=attempts,
                **extra,
            )

        if step.when is not None and not holds(
            step.when, when_data(alert, incident, self._playbooks())
        ):
            change(StepState.SKIPPED, {"when": step.when}, None)
            return "skipped"
        params = step.params
        if isinstance(params, timedelta):
            change(
                StepState.RUNNING, {"until": (now + params).isoformat()}, None, until=now + params
            )
            return "parked"
        if isinstance(params, ApprovalParams):
            try:
                prompt = templates.render(params.prompt, alert)
            except templates.TemplateRenderError as exc:
                prompt = f"(prompt failed to render: {exc})"
            until = now + step.deadline_after()
            result = {"prompt": prompt, "approvers": params.approvers, "step": f"{run}/{index}"}
            result["asked"] = await self._follow.ask(session, playbook, f"{run}/{index}", prompt)
            change(StepState.PENDING, result, None, until=until, awaiting_approval=True)
            return "parked"
        change(StepState.RUNNING, {}, None)
        key = f"{incident.incident_id}/{run}/{index}"
        try:
            result = await self._perform(session, playbook, step, params, key, attempts)
        except ResponderError as exc:
            change(StepState.FAILED, {"retryable": exc.retryable}, str(exc))
            return "failed"
        except (templates.TemplateRenderError, ValidationError) as exc:
            # the same alert would fail the same way again: not retryable
            change(StepState.FAILED, {"retryable": False}, f"params for this alert: {exc}")
            return "failed"
        change(StepState.SUCCEEDED, result, None)
        return "succeeded"

    async def _perform(
        self,
        session: Session,
        playbook: Playbook,
        step: Step,
        params: BaseModel,
        key: str,
        attempt: int,
    ) -> dict[str, Any]:
        incident = session.incident
        responder = self._responders.get(step.step_type)
        if responder is None:
            raise ResponderError(
                f"no {step.step_type} responder is configured in this worker; configure it "
                "(see `mlwarden config show`) or remove the step from the playbook",
                retryable=False,
            )
        rendered = render_params(params, incident.latest_alert)
        return await step_call(
            session,
            playbook,
            step,
            key,
            lambda ctx: responder(rendered, ctx),
            f"{step.step_type} step",
            attempt,
        )

    def _change(
        self,
        session: Session,
        playbook: Playbook,
        run: str,
        index: int,
        step: Step,
        state: StepState,
        result: dict[str, Any],
        error: str | None,
        *,
        attempts: int,
        until: datetime | None = None,
        awaiting_approval: bool = False,
        alert_id: str | None = None,
    ) -> None:
        """Store the step's new state, then append the action record describing it."""
        incident = session.incident
        key = f"{incident.incident_id}/{run}/{index}"
        at = session.clock()
        entry = StepEntry(
            state=state,
            attempts=attempts,
            idempotency_key=key,
            alert_id=alert_id or incident.latest_alert.alert_id,
            at=at,
            result=result,
            error=error,
            until=until,
            awaiting_approval=awaiting_approval,
        )
        session.save(steps={**incident.steps, f"{run}/{index}": entry})
        session.records.append(
            ActionRecord(
                incident_id=incident.incident_id,
                playbook=playbook.name,
                step_index=index,
                step_type=step.step_type,
                state=state,
                idempotency_key=key,
                alert_id=entry.alert_id,
                at=at,
                attempt=attempts,
                result=result,
                error=error,
            )
        )

    def _settle(
        self,
        session: Session,
        playbook: Playbook,
        run: str,
        index: int,
        state: StepState,
        result: dict[str, Any],
        error: str | None = None,
    ) -> None:
        """Move a step that already has an entry (parked, pending) on, keeping its attempts."""
        step = playbook.run_steps(run)[index]
        attempts = session.incident.steps[f"{run}/{index}"].attempts
        self._change(session, playbook, run, index, step, state, result, error, attempts=attempts)

    def decide(
        self,
        session: Session,
        playbook: Playbook,
        run: str,
        index: int,
        *,
        approved: bool,
        by: str,
        comment: str,
    ) -> None:
        """Settle a pending approval: succeeded (the run goes on) or failed for good."""
        entry = session.incident.steps[f"{run}/{index}"]
        result = {**entry.result, "approved" if approved else "rejected": by, "comment": comment}
        if approved:
            self._settle(session, playbook, run, index, StepState.SUCCEEDED, result)
        else:
            final = {**result, "final": True}
            self._settle(
                session, playbook, run, index, StepState.FAILED, final, f"rejected by {by}"
            )
        session.set_run(run, "active")

    def expire_approval(self, session: Session, playbook: Playbook, run: str, index: int) -> None:
        """A pending approval whose timeout passed fails for good."""
        result = {**session.incident.steps[f"{run}/{index}"].result, "final": True}
        timed_out = "nobody approved before the timeout"
        self._settle(session, playbook, run, index, StepState.FAILED, result, timed_out)
        session.set_run(run, "active")

    def drop_parked(self, session: Session) -> None:
        """The incident closed: parked waits and approvals will never continue."""
        for skey, entry in list(session.incident.steps.items()):
            if entry.parked:
                run, index = skey.rsplit("/", 1)
                playbook = self._playbooks().get(run.split("/", 1)[0])
                if playbook is not None:
                    resolved = "the incident was resolved first"
                    self._settle(
                        session,
                        playbook,
                        run,
                        int(index),
                        StepState.SKIPPED,
                        entry.result,
                        resolved,
                    )

    async def follow_up(self, session: Session, change: IncidentChange, suffix: str) -> None:
        """Tell every succeeded step whose responder follows incidents about `change`, once."""
        await self._follow.follow_up(session, change, suffix)
