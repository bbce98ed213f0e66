"""Grouping: which incident an alert belongs to, and how a new alert changes that incident.

Pure functions of the alert, the playbooks and the stored incident (no I/O), kept apart from
the engine that calls them under the incident's lock.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from mlwarden.playbooks.incidents import MAX_ALERTS, MAX_IDS, Incident, bounded
from mlwarden.playbooks.incidents import without_telemetry as stripped
from mlwarden.playbooks.matching import severity_rank
from mlwarden.playbooks.model import Playbook, group_value
from mlwarden.responders.base import Responder
from mlwarden.schemas.alert import Alert

PARKING_TYPES: Final = frozenset({"wait", "require_approval"})
RECOVERY_LABEL: Final = ("status", "resolved")


def group_key(playbook: Playbook, alert: Alert) -> tuple[str, dict[str, str | None]]:
    """The mapping key of the incident `alert` belongs to under `playbook`, and its group."""
    group = {name: group_value(alert, name) for name in playbook.group_by}
    if playbook.group_by == ["fingerprint"]:
        return alert.fingerprint, group
    digest = hashlib.sha256(json.dumps(sorted(group.items())).encode()).hexdigest()[:24]
    return f"grp-{digest}", group


def is_recovery(alert: Alert) -> bool:
    """A detector's "back to normal" alert: `labels.status == "resolved"`."""
    return alert.labels.get(RECOVERY_LABEL[0]) == RECOVERY_LABEL[1]


def check_responders(
    playbooks: Sequence[Playbook], responders: Mapping[str, Responder[Any]]
) -> None:
    """Refuse to start when a loaded playbook uses a step type nobody serves; say which."""
    names = Counter(playbook.name for playbook in playbooks)
    duplicates = sorted(name for name, count in names.items() if count > 1)
    if duplicates:
        raise ValueError(f"playbook names must be unique (they key step records): {duplicates}")
    missing = sorted(
        {
            f"{step.step_type} (playbook {playbook.name})"
            for playbook in playbooks
            for steps in (playbook.steps, *(rule.steps for rule in playbook.escalate))
            for step in steps
            if step.step_type not in PARKING_TYPES and step.step_type not in responders
        }
    )
    if missing:
        raise ValueError(
            f"no responder for step type(s): {', '.join(missing)}; "
            f"configured responders: {', '.join(sorted(responders)) or 'none'}"
        )


def opened(
    key: str, generation: int, group: dict[str, str | None], alert: Alert, now: datetime
) -> Incident:
    return Incident(
        incident_id=key if generation == 1 else f"{key}~{generation}",
        key=key,
        generation=generation,
        group=group,
        opened_at=now,
        updated_at=now,
        last_alert_at=now,
        severity=alert.severity,
        alert_count=1,
        first_alert=stripped(alert),
        latest_alert=alert,
        alert_ids=[alert.alert_id],
        alert_times=[alert.detected_at],
        fingerprints=[alert.fingerprint],
        resolve_after_s=0.0,
        realert_s=0.0,
        last_repeat_at=now,  # the first notice is the steps themselves
    )


def folded(incident: Incident, alert: Alert, now: datetime) -> dict[str, Any]:
    """The changes that fold a new alert into `incident`."""
    severity = max(incident.severity, alert.severity, key=severity_rank)
    fingerprints = incident.fingerprints
    if alert.fingerprint not in fingerprints:
        fingerprints = bounded(fingerprints, alert.fingerprint, MAX_ALERTS)
    return {
        "severity": severity,
        "alert_count": incident.alert_count + 1,
        "last_alert_at": now if not incident.closed else incident.last_alert_at,
        "latest_alert": alert,
        "recent_alerts": bounded(
            incident.recent_alerts, stripped(incident.latest_alert), MAX_ALERTS
        ),
        "alert_ids": bounded(incident.alert_ids, alert.alert_id, MAX_IDS),
        "alert_times": bounded(incident.alert_times, alert.detected_at, MAX_IDS),
        "fingerprints": fingerprints,
    }


def policy(incident: Incident, members: list[Playbook]) -> dict[str, Any]:
    """Lifecycle settings: the longest any member playbook asks for, kept in the incident so
    that a reload does not change an open incident's rules mid-way."""
    resolve_after = max(p.resolve.after.total_seconds() for p in members)
    realert = max(p.realert.total_seconds() for p in members)
    repeats = [p.repeat_interval.total_seconds() for p in members if p.repeat_interval is not None]
    return {
        "resolve_after_s": max(incident.resolve_after_s, resolve_after),
        "realert_s": max(incident.realert_s, realert),
        "repeat_interval_s": min(repeats) if repeats else incident.repeat_interval_s,
    }
