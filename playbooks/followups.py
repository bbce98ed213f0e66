"""Calls around the steps: follow-ups on incident changes, approval requests, and the guard
every outbound call goes through (deadline, and responder bugs turned into failures).

Follow-ups go to every succeeded step whose responder implements `FollowsIncident` (a page is
resolved, a Slack thread updated) with the step's recorded result, under the step's key plus
`#<change>`; each is stored as running, then succeeded or failed, so a follow-up delivered
before a crash is not delivered again, and one interrupted by a crash is repeated with its key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic_core import to_jsonable_python

from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.steps import DEFAULT_TIMEOUT, Step
from mlwarden.responders.base import (
    FollowsIncident,
    IncidentChange,
    Responder,
    RetryPolicy,
    StepContext,
    call_with_retries,
)
from mlwarden.responders.params import PageParams
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.errors import ResponderError

if TYPE_CHECKING:
    from mlwarden.playbooks.execution import Session

_LOG: Final = logging.getLogger(__name__)


class FollowUps:
    """Delivers follow-ups and approval requests for one engine's responders."""

    def __init__(
        self,
        responders: Mapping[str, Responder[Any]],
        playbooks: Callable[[], Mapping[str, Playbook]],
    ) -> None:
        self._responders = responders
        self._playbooks = playbooks

    async def ask(self, session: Session, playbook: Playbook, step: str, prompt: str) -> Any:
        """Page the approval request with Approve/Reject buttons when the page responder can
        (`ask_approval`); the decision may also come from `mlwarden incidents approve`."""
        ask = getattr(self._responders.get("page"), "ask_approval", None)
        if not callable(ask):
            return None
        key = f"{session.incident.incident_id}/{step}#ask"
        ctx = incident_context(session, playbook, key, DEFAULT_TIMEOUT.total_seconds())
        try:
            return await guarded(
                lambda: ask(PageParams(message=prompt), ctx, step=step),
                DEFAULT_TIMEOUT.total_seconds(),
                "approval request",
            )
        except ResponderError as exc:
            return {"error": str(exc)}

    async def follow_up(self, session: Session, change: IncidentChange, suffix: str) -> None:
        """Tell every succeeded step whose responder follows incidents about `change`, once.

        An approval request that was paged (`require_approval` with an `asked` result) is
        followed up through the page responder whatever became of the step, so a resolved
        incident leaves no live Approve/Reject buttons or triggered PagerDuty alert behind.
        """
        for skey, entry in list(session.incident.steps.items()):
            run, index = skey.rsplit("/", 1)
            playbook = self._playbooks().get(run.split("/", 1)[0])
            if playbook is None:
                continue
            step = playbook.run_steps(run)[int(index)]
            asked = entry.result.get("asked")
            if step.step_type == "require_approval" and isinstance(asked, dict):
                if "error" in asked:
                    continue  # the request never reached anyone
                responder, earlier, kind = self._responders.get("page"), asked, "#ask"
            elif entry.state is StepState.SUCCEEDED:
                responder, earlier, kind = self._responders.get(step.step_type), entry.result, ""
            else:
                continue
            if responder is None or not callable(getattr(responder, "follow_up", None)):
                continue
            if entry.follow_ups.get(suffix) in (StepState.SUCCEEDED, StepState.FAILED):
                continue
            await self._one_follow_up(
                session,
                playbook,
                run,
                int(index),
                step,
                cast(FollowsIncident, responder),
                change,
                suffix,
                earlier=earlier,
                key_suffix=f"{kind}#{suffix}",
            )

    async def _one_follow_up(
        self,
        session: Session,
        playbook: Playbook,
        run: str,
        index: int,
        step: Step,
        responder: FollowsIncident,
        change: IncidentChange,
        suffix: str,
        *,
        earlier: dict[str, Any],
        key_suffix: str,
    ) -> None:
        """Deliver one follow-up with the step's (or its approval request's) `earlier` result,
        under the step's key + `key_suffix`, recording it in the entry's `suffix` slot."""
        skey = f"{run}/{index}"
        key = f"{session.incident.steps[skey].idempotency_key}{key_suffix}"

        def record(state: StepState, result: dict[str, Any], error: str | None) -> None:
            entry = session.incident.steps[skey]
            updated = entry.model_copy(update={"follow_ups": {**entry.follow_ups, suffix: state}})
            session.save(steps={**session.incident.steps, skey: updated})
            session.records.append(
                ActionRecord(
                    incident_id=session.incident.incident_id,
                    playbook=playbook.name,
                    step_index=index,
                    step_type=f"{step.step_type}#{change.value}",
                    state=state,
                    idempotency_key=key,
                    alert_id=session.incident.latest_alert.alert_id,
                    at=session.clock(),
                    attempt=entry.attempts,
                    result=result,
                    error=error,
                )
            )

        record(StepState.RUNNING, {}, None)
        try:
            result = await step_call(
                session,
                playbook,
                step,
                key,
                lambda ctx: responder.follow_up(ctx, earlier, change),
                f"{step.step_type} follow-up",
            )
        except ResponderError as exc:
            record(StepState.FAILED, {"retryable": exc.retryable}, str(exc))
        else:
            record(StepState.SUCCEEDED, result, None)


def incident_context(
    session: Session, playbook: Playbook, key: str, timeout_s: float, attempt: int = 1
) -> StepContext:
    """What a responder is told of `session`'s incident, with a deadline `timeout_s` from now.

    Outbound deadlines are monotonic (StepContext's contract), not incident time.
    """
    incident = session.incident
    return StepContext(
        idempotency_key=key,
        incident_id=incident.incident_id,
        playbook=playbook.name,
        alert=incident.latest_alert,
        alerts=incident.alerts(),
        deadline=time.monotonic() + timeout_s,
        attempt=attempt,
    )


async def step_call(
    session: Session,
    playbook: Playbook,
    step: Step,
    key: str,
    call: Callable[[StepContext], Awaitable[Any]],
    what: str,
    attempt: int = 1,
) -> dict[str, Any]:
    """`call(ctx)` under `step`'s timeout and retry policy, `guarded`; `what` names it."""
    timeout = step.deadline_after().total_seconds()
    ctx = incident_context(session, playbook, key, timeout, attempt)
    policy = RetryPolicy(retries=step.retries, initial_backoff=step.backoff)
    return await guarded(
        lambda: call_with_retries(lambda: call(ctx), policy, ctx.deadline), timeout, what
    )


async def guarded(call: Callable[[], Any], timeout_s: float, what: str) -> dict[str, Any]:
    """Await `call()` within `timeout_s`; a timeout or a responder bug becomes ResponderError.

    A bug in a responder must not crash the worker (which would replay the alert into the same
    bug forever): it is logged with its traceback and recorded as a non-retryable failure.
    """
    try:
        async with asyncio.timeout(timeout_s):
            result = await call()
    except TimeoutError:
        raise ResponderError(f"{what} timed out after {timeout_s:g}s", retryable=True) from None
    except ResponderError:
        raise
    except Exception as exc:
        _LOG.exception("%s raised a bug, not a ResponderError", what)
        raise ResponderError(
            f"{what} crashed: {type(exc).__name__}: {exc}", retryable=False
        ) from exc
    jsonable = to_jsonable_python(result)
    if not isinstance(jsonable, dict):
        raise ResponderError(
            f"{what} returned {type(result).__name__}, not a mapping", retryable=False
        )
    return jsonable
