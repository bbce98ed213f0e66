"""What the engine says about an incident: its summary, its `when` data and its next due time.

Kept apart from the engine because three callers need them (the engine, the dry run and the
CLI) and because they are pure functions of the stored incident and the loaded playbooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from mlwarden.playbooks.incidents import Incident
from mlwarden.playbooks.matching import alert_document
from mlwarden.playbooks.model import Playbook, escalation_run
from mlwarden.schemas.action import StepState
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.incident import IncidentSummary, StepSummary


def run_names(playbook: Playbook) -> list[str]:
    """The main run, then one run per escalation rule, in the order they are walked."""
    return [playbook.name] + [
        escalation_run(playbook.name, i) for i in range(len(playbook.escalate))
    ]


def summarize(incident: Incident, playbooks: Mapping[str, Playbook]) -> IncidentSummary:
    """The incident as the CLI shows it: every step of every run it started."""
    steps: list[StepSummary] = []
    for name in incident.playbooks:
        playbook = playbooks.get(name)
        if playbook is None:
            continue  # unloaded since: its recorded steps stay in the store, not in the summary
        for run in run_names(playbook):
            if run not in incident.runs:
                continue
            for index, step in enumerate(playbook.run_steps(run)):
                entry = incident.steps.get(f"{run}/{index}")
                steps.append(
                    StepSummary(
                        playbook=name,
                        run=run,
                        index=index,
                        step_type=step.step_type,
                        state=entry.state if entry else None,
                        attempts=entry.attempts if entry else 0,
                        waiting_until=entry.until if entry and entry.parked else None,
                        awaiting_approval=bool(entry and entry.parked and entry.awaiting_approval),
                        error=entry.error if entry else None,
                    )
                )
    latest = incident.latest_alert
    return IncidentSummary(
        incident_id=incident.incident_id,
        status=incident.status,
        playbooks=list(incident.playbooks),
        group=dict(incident.group),
        kind=latest.kind,
        detector=latest.detector,
        severity=incident.severity,
        model_id=latest.model_id,
        model_version=latest.model_version,
        client_id=latest.client_id,
        summary=latest.summary,
        alert_count=incident.alert_count,
        opened_at=incident.opened_at,
        updated_at=incident.updated_at,
        resolved_at=incident.resolved_at,
        resolved_reason=incident.resolved_reason,
        acknowledged_by=incident.acknowledged_by,
        steps=steps,
    )


def when_data(
    alert: Alert, incident: Incident, playbooks: Mapping[str, Playbook]
) -> dict[str, Any]:
    """What a step's `when` and an escalation's `condition` see: {alert, incident}."""
    return {
        "alert": alert_document(alert),
        "incident": summarize(incident, playbooks).model_dump(mode="json"),
    }


def due_at(incident: Incident, now: datetime, retention: timedelta) -> float:
    """When `tick` must next look at the incident (epoch seconds)."""
    if incident.closed:
        following = any(
            state is StepState.RUNNING
            for entry in incident.steps.values()
            for state in entry.follow_ups.values()
        )
        assert incident.resolved_at is not None
        return now.timestamp() if following else (incident.resolved_at + retention).timestamp()
    times = [(incident.last_alert_at + timedelta(seconds=incident.resolve_after_s)).timestamp()]
    if any(status == "active" for status in incident.runs.values()):
        times.append(now.timestamp())  # left active: a crash interrupted it; resume it
    times += [
        entry.until.timestamp()
        for entry in incident.steps.values()
        if entry.parked and entry.until is not None
    ]
    return min(times)
