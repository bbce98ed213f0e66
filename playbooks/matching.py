"""Which alerts a playbook answers: `match`, every given condition must hold.

    match:
      kinds: [extraction]
      detectors: [blacklight]            # registry names, checked when the playbook loads
      min_severity: warning              # info < warning < critical
      model_id: "fraud-*"                # fnmatch globs over the alert's fields
      labels: {pattern: sybil}           # every label given must glob-match
      condition: "score > `20`"          # JMESPath over the alert's JSON

Globs are case-sensitive (`fnmatchcase`): ids are ids, and a playbook must not behave
differently on another operating system.
"""

from __future__ import annotations

import difflib
import functools
from fnmatch import fnmatchcase
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mlwarden.playbooks.conditions import Condition, holds
from mlwarden.schemas.alert import Alert, AlertKind, Severity

SEVERITY_ORDER: Final = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)


def severity_rank(severity: Severity) -> int:
    """Position of `severity` in info < warning < critical (StrEnum order is alphabetical)."""
    return SEVERITY_ORDER.index(severity)


@functools.cache
def detector_names() -> tuple[str, ...]:
    """The detector registry's names (imported on first use: the registry loads torch)."""
    from mlwarden.detectors.registry import DETECTORS

    return tuple(sorted(DETECTORS))


def _known_detector(name: str) -> str:
    known = detector_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PydanticCustomError(
            "detector_name",
            "{problem}",
            {"problem": f"unknown detector {name!r}{hint}; known: {', '.join(known)}"},
        )
    return name


DetectorName = Annotated[str, AfterValidator(_known_detector)]
Glob = Annotated[str, Field(min_length=1, max_length=256, description="An fnmatch glob.")]


def alert_document(alert: Alert) -> dict[str, Any]:
    """The alert as JSON values, the data conditions and silences see (no raw telemetry)."""
    return alert.model_dump(mode="json", exclude={"recent_telemetry"})


class Match(BaseModel):
    """Which alerts a playbook answers: all given conditions must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    kinds: list[AlertKind] = Field(min_length=1, description="Alert kinds this playbook handles.")
    detectors: list[DetectorName] | None = Field(
        default=None,
        min_length=1,
        description="Registry names of detectors to accept; omit to accept every detector.",
    )
    min_severity: Severity | None = Field(
        default=None, description="Lowest alert severity to act on (info < warning < critical)."
    )
    model_id: Glob | None = None
    model_version: Glob | None = None
    client_id: Glob | None = Field(
        default=None, description="Glob; an alert without a client never matches one."
    )
    labels: dict[str, Glob] = Field(
        default_factory=dict, description="Label name → glob; every one must match."
    )
    condition: Condition | None = Field(
        default=None, description="JMESPath over the alert's JSON; a truthy result matches."
    )

    def matches(self, alert: Alert) -> bool:
        """True when `alert` meets every condition given."""
        if alert.kind not in self.kinds:
            return False
        if self.detectors is not None and alert.detector not in self.detectors:
            return False
        if self.min_severity is not None and severity_rank(alert.severity) < severity_rank(
            self.min_severity
        ):
            return False
        for glob, value in (
            (self.model_id, alert.model_id),
            (self.model_version, alert.model_version),
            (self.client_id, alert.client_id),
        ):
            if glob is not None and (value is None or not fnmatchcase(value, glob)):
                return False
        for name, glob in self.labels.items():
            label = alert.labels.get(name)
            if label is None or not fnmatchcase(label, glob):
                return False
        return self.condition is None or holds(self.condition, alert_document(alert))
