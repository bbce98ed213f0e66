"""Run matching playbooks for an alert, once per incident, and audit every step.

The incident is the alert's fingerprint, and a step's idempotency key is
`incident/playbook/step-index`. Before a step runs, the engine reads its entry in the incident
store: a step that already succeeded is skipped entirely, so a replayed alert, a second alert of
the same incident, or a restarted engine over the same store never pages twice. A step's success
is stored before it is acknowledged (returned as an action record), so a crash in between repeats
the step with the same key, which the responder deduplicates, instead of losing it.

A failed step does not stop the steps after it: a failed rate limit must not silence the page
that follows. Its entry stays `failed`, so the next alert of the incident tries it again.
Time is read only through the injected `clock`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, assert_never

from pydantic_core import to_jsonable_python

from mlwarden.playbooks.incidents import IncidentStore, StepEntry
from mlwarden.playbooks.model import PageParams, Playbook, Step
from mlwarden.playbooks.templates import TemplateRenderError
from mlwarden.responders.page import Page, Pager
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.errors import ResponderError


class PlaybookEngine:
    """Matches alerts to playbooks and runs their steps through the responders."""

    def __init__(
        self,
        playbooks: Sequence[Playbook],
        pager: Pager,
        incidents: MutableMapping[str, Any],
        clock: Callable[[], datetime],
    ) -> None:
        names = Counter(playbook.name for playbook in playbooks)
        duplicates = sorted(name for name, count in names.items() if count > 1)
        if duplicates:
            raise ValueError(f"playbook names must be unique (they key step records): {duplicates}")
        self._playbooks = tuple(playbooks)
        self._pager = pager
        self._store = IncidentStore(incidents)
        self._clock = clock
        self._locks = _KeyedLocks()

    async def handle(self, alert: Alert) -> list[ActionRecord]:
        """Run every matching playbook's pending steps; return their action records in order.

        The caller publishes the records to `mlwarden.actions`. Alerts of one incident are
        handled one at a time, so two concurrent alerts cannot both run a step.
        """
        records: list[ActionRecord] = []
        async with self._locks.hold(alert.fingerprint):
            for playbook in self._playbooks:
                if playbook.matches(alert):
                    for index, step in enumerate(playbook.steps):
                        records += await self._run_step(alert, playbook, index, step)
        return records

    async def _run_step(
        self, alert: Alert, playbook: Playbook, index: int, step: Step
    ) -> list[ActionRecord]:
        incident_id = alert.fingerprint
        step_key = f"{playbook.name}/{index}"
        previous = self._store.step(incident_id, step_key)
        if previous is not None and previous.state is StepState.SUCCEEDED:
            return []
        attempt = (previous.attempts if previous is not None else 0) + 1
        key = f"{incident_id}/{step_key}"

        def change(state: StepState, result: dict[str, Any], error: str | None) -> ActionRecord:
            """Store the step's new state, then describe it as an action record."""
            at = self._clock()
            self._store.record(
                incident_id,
                step_key,
                StepEntry(
                    state=state,
                    attempts=attempt,
                    idempotency_key=key,
                    alert_id=alert.alert_id,
                    at=at,
                    result=result,
                    error=error,
                ),
            )
            return ActionRecord(
                incident_id=incident_id,
                playbook=playbook.name,
                step_index=index,
                step_type=step.step_type,
                state=state,
                idempotency_key=key,
                alert_id=alert.alert_id,
                at=at,
                attempt=attempt,
                result=result,
                error=error,
            )

        records = [change(StepState.RUNNING, {}, None)]
        try:
            result = to_jsonable_python(await self._perform(alert, playbook, step, key))
        except ResponderError as exc:
            records.append(change(StepState.FAILED, {"retryable": exc.retryable}, str(exc)))
        except TemplateRenderError as exc:  # the same alert would fail the same way again
            records.append(change(StepState.FAILED, {"retryable": False}, str(exc)))
        else:
            records.append(change(StepState.SUCCEEDED, result, None))
        return records

    async def _perform(
        self, alert: Alert, playbook: Playbook, step: Step, key: str
    ) -> dict[str, Any]:
        """Hand the step to its responder; one branch per step type."""
        params = step.params
        if isinstance(params, PageParams):
            page = Page(
                severity=params.severity or alert.severity,
                summary=params.render(alert),
                incident_id=alert.fingerprint,
                alert_id=alert.alert_id,
                kind=alert.kind,
                detector=alert.detector,
                model_id=alert.model_id,
                model_version=alert.model_version,
                client_id=alert.client_id,
                playbook=playbook.name,
            )
            return await self._pager.page(page, key)
        assert_never(params)


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key], self._locks[key]
