"""Silences and inhibition: the two reasons a matching alert opens no incident.

A silence is a human's decision ("we know, stop for 2h"): matchers (field glob) and an expiry,
added and removed by commands. Inhibition is a playbook's: while one of its incidents is open
at `source_severity` or above, lower-severity alerts sharing its `same` fields are dropped,
except alerts of that very incident (they are its own updates, not noise about it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from fnmatch import fnmatchcase

from mlwarden.playbooks.incidents import Incident
from mlwarden.playbooks.matching import severity_rank
from mlwarden.playbooks.model import Playbook, group_value
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.incident import Silence, SilenceMatcher


def _field(alert: Alert, name: str) -> str | None:
    if name == "severity":
        return alert.severity.value
    if name == "kind":
        return alert.kind.value
    return group_value(alert, name)


def matcher_holds(matcher: SilenceMatcher, alert: Alert) -> bool:
    value = _field(alert, matcher.field)
    return value is not None and fnmatchcase(value, matcher.pattern)


def silencing(silences: Iterable[Silence], alert: Alert, now: datetime) -> Silence | None:
    """The first active silence whose every matcher holds for `alert`."""
    for silence in silences:
        if silence.starts_at <= now < silence.ends_at and all(
            matcher_holds(m, alert) for m in silence.matchers
        ):
            return silence
    return None


def inhibiting(
    playbooks: Sequence[Playbook], incidents: Iterable[Incident], alert: Alert
) -> Incident | None:
    """An open incident whose playbook's `inhibits` rule drops `alert`, if any."""
    rules = {playbook.name: playbook.inhibits for playbook in playbooks if playbook.inhibits}
    if not rules:
        return None
    for incident in incidents:
        if incident.closed or alert.fingerprint in incident.fingerprints:
            continue
        for name in incident.playbooks:
            for rule in rules.get(name, ()):
                if (
                    severity_rank(incident.severity) >= severity_rank(rule.source_severity)
                    and severity_rank(alert.severity) <= severity_rank(rule.severity)
                    and (rule.kinds is None or alert.kind in rule.kinds)
                    and all(
                        group_value(alert, field) == group_value(incident.latest_alert, field)
                        for field in rule.same
                    )
                ):
                    return incident
    return None
