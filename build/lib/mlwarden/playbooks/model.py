"""The playbook schema: what a YAML playbook may say, as pydantic models.

These models are the one source of truth for the format (the loader only turns YAML into the
plain values they validate, and their JSON Schema is what editors check playbooks against)::

    name: abuse-query-budget
    match: {kinds: [abuse], detectors: [query_budget], min_severity: warning}
    steps:
      - page: {severity: critical, message: "client {{ alert.client_id }} ..."}

Every model is frozen and refuses unknown fields, so a misspelt key is an error at load time
rather than a silently ignored option during an incident.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mlwarden.playbooks import templates
from mlwarden.schemas.alert import Alert, AlertKind, Severity

SEVERITY_ORDER: Final = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)


def severity_rank(severity: Severity) -> int:
    """Position of `severity` in info < warning < critical (StrEnum order is alphabetical)."""
    return SEVERITY_ORDER.index(severity)


def _problem(error_type: str, message: str) -> PydanticCustomError:
    """A validation error whose text is exactly `message` (no "Value error, " prefix)."""
    return PydanticCustomError(error_type, "{problem}", {"problem": message})


def _checked_template(source: str) -> str:
    try:
        templates.check(source)
    except templates.TemplateRenderError as exc:
        raise _problem("template", str(exc)) from None
    return source


# A playbook name is part of every idempotency key (`incident/playbook/step`), so it may not
# contain "/" or whitespace: two playbooks must never produce the same key.
_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _checked_name(name: str) -> str:
    if re.fullmatch(_NAME_PATTERN, name) is None:
        raise _problem(
            "playbook_name",
            "a playbook name is letters, digits, '_', '.' and '-', starting with a letter or "
            "digit (no '/' or spaces: it is part of every step's idempotency key)",
        )
    return name


PlaybookName = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": _NAME_PATTERN}),
    AfterValidator(_checked_name),
]
MessageTemplate = Annotated[str, Field(min_length=1), AfterValidator(_checked_template)]

_FROZEN_STRICT = ConfigDict(frozen=True, extra="forbid")


class Match(BaseModel):
    """Which alerts a playbook answers: all given conditions must hold."""

    model_config = _FROZEN_STRICT

    kinds: list[AlertKind] = Field(min_length=1, description="Alert kinds this playbook handles.")
    detectors: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Registry names of detectors to accept; omit to accept every detector.",
    )
    min_severity: Severity | None = Field(
        default=None, description="Lowest alert severity to act on (info < warning < critical)."
    )

    def matches(self, alert: Alert) -> bool:
        """True when `alert` meets every condition given."""
        if alert.kind not in self.kinds:
            return False
        if self.detectors is not None and alert.detector not in self.detectors:
            return False
        return self.min_severity is None or (
            severity_rank(alert.severity) >= severity_rank(self.min_severity)
        )


class PageParams(BaseModel):
    """Page on-call. `message` is a Jinja2 template with `alert` in context."""

    model_config = _FROZEN_STRICT

    message: MessageTemplate = Field(description="Jinja2 template, e.g. '{{ alert.summary }}'.")
    severity: Severity | None = Field(
        default=None, description="Page at this severity instead of the alert's own."
    )

    def render(self, alert: Alert) -> str:
        """The message for `alert`; raises `templates.TemplateRenderError` if it cannot render."""
        return templates.render(self.message, alert)


# The params model of every step type; grows with the Step fields below.
StepParams = PageParams


class Step(BaseModel):
    """One action of a playbook, written as a one-key mapping whose key is its type.

    Each step type is one optional field holding its params model, and a validator insists on
    exactly one known key: adding a type (rate_limit, snapshot_evidence, rollback_model) is a
    params model, a field here and a member of `StepParams`. Fields rather than a pydantic tagged
    union because a tagged union inserts its tag into error locations (`steps.0.page.page.x`),
    while here they read exactly like the YAML path (`steps[0].page.x`).
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    page: PageParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_known_type(cls, data: Any) -> Any:
        known = list(cls.model_fields)
        example = "a one-key mapping such as `page: {message: ...}`"
        if not isinstance(data, dict):
            raise _problem("step_shape", f"a step is {example}")
        if len(data) != 1:
            found = ", ".join(map(str, data)) or "nothing"
            raise _problem("step_shape", f"a step is {example}; found keys: {found}")
        (step_type,) = data
        if step_type not in known:
            close = difflib.get_close_matches(str(step_type), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _problem(
                "step_type",
                f"unknown step type {step_type!r}{hint}; known step types: {', '.join(known)}",
            )
        return data

    @property
    def step_type(self) -> str:
        """The step's type: the one key it was written with."""
        return self._chosen()[0]

    @property
    def params(self) -> StepParams:
        """The params model of the step's type."""
        return self._chosen()[1]

    def _chosen(self) -> tuple[str, StepParams]:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, StepParams):
                return name, value
        raise AssertionError("unreachable: the validator admits exactly one step type")


class Playbook(BaseModel):
    """A named response: when an alert matches, run the steps in order."""

    model_config = _FROZEN_STRICT

    name: PlaybookName = Field(description="Unique among loaded playbooks; part of step keys.")
    description: str = ""
    match: Match
    steps: list[Step] = Field(min_length=1)

    def matches(self, alert: Alert) -> bool:
        """True when this playbook should respond to `alert`."""
        return self.match.matches(alert)
