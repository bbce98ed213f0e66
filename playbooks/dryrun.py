"""Dry runs: the real engine over recorded alerts, with responders that only write down calls.

`mlwarden playbooks test` and the shipped library's tests use this, so what a playbook author
sees is exactly what the worker would do (matching, grouping, escalation, silences and the
rendered params of every step), minus the outside world. Time follows the alerts: the clock
is the latest alert's detection time, and `tick` runs after each alert, so `wait` steps and
quiet periods behave as they would have during the recorded stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mlwarden.playbooks.engine import EngineOutput, PlaybookEngine
from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.steps import StepTypeNames
from mlwarden.responders.base import IncidentChange, StepContext, StepResult
from mlwarden.schemas.action import StepState
from mlwarden.schemas.alert import Alert


@dataclass(frozen=True)
class DryCall:
    """One call a responder would have received."""

    step_type: str
    idempotency_key: str
    incident_id: str
    playbook: str
    params: dict[str, Any]
    change: str | None = None
    """For follow-ups: repeat, acknowledged or resolved."""


class DryRunResponder:
    """Records calls and reports success; also follows incidents, so resolutions show up."""

    def __init__(self, step_type: str, calls: list[DryCall]) -> None:
        self._step_type = step_type
        self._calls = calls

    async def __call__(self, params: BaseModel, ctx: StepContext) -> StepResult:
        self._calls.append(
            DryCall(
                self._step_type,
                ctx.idempotency_key,
                ctx.incident_id,
                ctx.playbook,
                params.model_dump(mode="json"),
            )
        )
        return {"dry_run": True}

    async def follow_up(
        self, ctx: StepContext, earlier: StepResult, change: IncidentChange
    ) -> StepResult:
        self._calls.append(
            DryCall(self._step_type, ctx.idempotency_key, ctx.incident_id, ctx.playbook, {}, change)
        )
        return {"dry_run": True}


@dataclass
class AlertOutcome:
    """What one alert of the stream did: matches, engine output, and responder calls."""

    alert: Alert
    matched: list[str]
    output: EngineOutput
    calls: list[DryCall] = field(default_factory=list)


async def dry_run(playbooks: Sequence[Playbook], alerts: Iterable[Alert]) -> list[AlertOutcome]:
    """Run `alerts` (in the given order) through a fresh engine with recording responders."""
    calls: list[DryCall] = []
    responders = {name: DryRunResponder(name, calls) for name in StepTypeNames}
    now: list[datetime] = []
    engine = PlaybookEngine(playbooks, responders, {}, clock=lambda: now[-1])
    outcomes: list[AlertOutcome] = []
    for alert in alerts:
        now.append(max(alert.detected_at, now[-1]) if now else alert.detected_at)
        before = len(calls)
        output = await engine.handle(alert)
        output.extend(await engine.tick())
        matched = [playbook.name for playbook in playbooks if playbook.matches(alert)]
        outcomes.append(AlertOutcome(alert, matched, output, calls[before:]))
    return outcomes


def describe(outcome: AlertOutcome) -> list[str]:
    """Human-readable lines for one alert's outcome (what `playbooks test` prints)."""
    alert = outcome.alert
    lines = [
        f"alert {alert.alert_id}: {alert.kind.value}/{alert.detector} [{alert.severity.value}] "
        f"model {alert.model_id} v{alert.model_version} client {alert.client_id or '-'}",
        f"  matches: {', '.join(outcome.matched) or 'no playbook'}",
    ]
    for suppressed in outcome.output.suppressed:
        lines.append(f"  suppressed: {suppressed.reason} by {suppressed.by}")
    for summary in outcome.output.incidents:
        group = ", ".join(f"{k}={v}" for k, v in summary.group.items())
        lines.append(
            f"  incident {summary.incident_id} [{summary.status.value}] ({group}): "
            f"{summary.alert_count} alert(s), playbooks {', '.join(summary.playbooks)}"
        )
    rendered = {call.idempotency_key: call.params for call in outcome.calls}
    for record in outcome.output.actions:
        if record.state is StepState.RUNNING and record.step_type != "wait":
            continue  # its outcome follows; a running effect says nothing new
        line = f"  step {record.idempotency_key} {record.step_type}: {record.state.value}"
        if record.error:
            line += f" ({record.error})"
        shown = rendered.get(record.idempotency_key) or {
            k: v for k, v in record.result.items() if k in ("until", "prompt", "when")
        }
        if shown:
            line += f" {json.dumps(shown, sort_keys=True)}"
        lines.append(line)
    return lines
