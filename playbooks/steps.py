"""A playbook step: one effect (or a pause) plus how to run it.

    - rate_limit: {action: throttle, limit_per_minute: 10, duration: 1h}
      when: "alert.severity == 'critical'"   # JMESPath over {alert, incident}; false = skipped
      timeout: 30s                            # deadline of the whole step, retries included
      retries: 3                              # retryable failures, exponential backoff
      on_failure: continue                    # continue | abort | escalate

The type is the one key that names a step type; the other keys are options. Effect params are
the responders' own typed models (`responders.params`), so the playbook schema and what the
responder receives are one definition. Their string fields may be Jinja2 templates over
`alert`; each one is rendered against a sample alert when the playbook loads, so a typo fails
at load time, and rendered for real (then validated again) just before the responder runs.

`wait: 10m` parks the incident; `tick` resumes it. `require_approval` parks it until a human
approves or rejects (`mlwarden incidents approve ID`), or its `timeout` (default 1h) passes,
which fails the step. Neither blocks the engine.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from mlwarden.playbooks import templates
from mlwarden.playbooks.conditions import Condition
from mlwarden.responders.params import (
    NotifyParams,
    PageParams,
    RateLimitParams,
    RollbackParams,
    SnapshotEvidenceParams,
)
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.duration import Duration

DEFAULT_TIMEOUT: Final = timedelta(seconds=30)
DEFAULT_APPROVAL_TIMEOUT: Final = timedelta(hours=1)


class OnFailure(StrEnum):
    """What a failed step (after its retries) means for the steps after it."""

    CONTINUE = "continue"
    """Run the next steps anyway; a failed rate limit must not silence the page after it."""
    ABORT = "abort"
    """Stop here; the next alert of the incident tries this step again."""
    ESCALATE = "escalate"
    """Start every escalation rule of the playbook now, then continue."""


class ApprovalParams(BaseModel):
    """Wait for a human before the steps after this one (a rollback, a block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(
        default="Approve the next steps for: {{ alert.summary }}",
        min_length=1,
        description="Template: what the approver is asked (shown in the incident).",
    )
    approvers: list[str] = Field(
        default_factory=list, description="Who may approve or reject; empty = anyone."
    )


def _template_fields(params: BaseModel) -> dict[str, str]:
    """The plain-string fields of `params`: every one may be a template."""
    return {
        name: value
        for name in type(params).model_fields
        if type(value := getattr(params, name)) is str
    }


def _checked_templates(params: BaseModel) -> BaseModel:
    for name, source in _template_fields(params).items():
        try:
            templates.check(source)
        except templates.TemplateRenderError as exc:
            # `path` lets the loader point at the field itself, not at the params mapping.
            raise PydanticCustomError(
                "template", "{problem}", {"problem": str(exc), "path": [name]}
            ) from None
    return params


def render_params(params: BaseModel, alert: Alert) -> BaseModel:
    """`params` with every template field rendered for `alert`, validated again.

    Raises `templates.TemplateRenderError` when a template fails on this alert, and
    `pydantic.ValidationError` when a rendered value breaks the model (an empty message).
    """
    rendered = {
        name: templates.render(src, alert) for name, src in _template_fields(params).items()
    }
    return type(params).model_validate(params.model_dump() | rendered)


StepTypeNames: Final = (
    "rate_limit",
    "snapshot_evidence",
    "rollback_model",
    "page",
    "notify",
    "wait",
    "require_approval",
)
_OPTIONS: Final = ("when", "timeout", "retries", "backoff", "on_failure")


class Step(BaseModel):
    """One action of a playbook: one step-type key, plus options.

    Each step type is an optional field (rather than a tagged union, whose tag would show up
    in error paths as `steps.0.page.page.x`), and a validator insists on exactly one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_limit: Annotated[RateLimitParams, AfterValidator(_checked_templates)] | None = None
    snapshot_evidence: (
        Annotated[SnapshotEvidenceParams, AfterValidator(_checked_templates)] | None
    ) = None
    rollback_model: Annotated[RollbackParams, AfterValidator(_checked_templates)] | None = None
    page: Annotated[PageParams, AfterValidator(_checked_templates)] | None = None
    notify: Annotated[NotifyParams, AfterValidator(_checked_templates)] | None = None
    wait: Duration | None = Field(default=None, description="Park the incident this long.")
    require_approval: Annotated[ApprovalParams, AfterValidator(_checked_templates)] | None = None

    when: Condition | None = Field(
        default=None, description="JMESPath over {alert, incident}; false: the step is skipped."
    )
    timeout: Duration | None = Field(
        default=None,
        description="Deadline for the step, retries included (default 30s); for "
        "require_approval, how long to wait for a human (default 1h).",
    )
    retries: int = Field(default=2, ge=0, le=10, description="Attempts after the first.")
    backoff: Duration = Field(
        default=timedelta(seconds=0.5), description="First retry delay; doubles each time."
    )
    on_failure: OnFailure = OnFailure.CONTINUE

    @model_validator(mode="before")
    @classmethod
    def _one_known_type(cls, data: Any) -> Any:
        example = "a mapping with one step type, such as `page: {message: ...}`"
        if not isinstance(data, dict):
            raise _problem("step_shape", f"a step is {example}")
        types = [key for key in data if key in StepTypeNames]
        if len(types) > 1:
            raise _problem(
                "step_shape",
                f"a step has exactly one type; found {', '.join(map(str, types))} "
                "(write them as separate steps)",
            )
        if not types:
            others = [key for key in data if key not in _OPTIONS]
            if len(others) == 1:
                (name,) = others
                close = difflib.get_close_matches(str(name), StepTypeNames, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _problem(
                    "step_type",
                    f"unknown step type {name!r}{hint}; "
                    f"known step types: {', '.join(StepTypeNames)}",
                )
            found = ", ".join(map(str, data)) or "nothing"
            raise _problem("step_shape", f"a step is {example}; found keys: {found}")
        (step_type,) = types
        if data[step_type] is None and step_type != "wait":
            return {**data, step_type: {}}  # `- snapshot_evidence:` means "the defaults"
        return data

    @property
    def step_type(self) -> str:
        """The step's type: the one step-type key it was written with."""
        for name in StepTypeNames:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("unreachable: the validator admits exactly one step type")

    @property
    def params(self) -> BaseModel | timedelta:
        """The params model of the step's type (a duration for `wait`)."""
        value: BaseModel | timedelta = getattr(self, self.step_type)
        return value

    def deadline_after(self) -> timedelta:
        """How long the step may take (for require_approval: how long a human may take)."""
        if self.timeout is not None:
            return self.timeout
        return DEFAULT_APPROVAL_TIMEOUT if self.step_type == "require_approval" else DEFAULT_TIMEOUT


def _problem(error_type: str, message: str) -> PydanticCustomError:
    """A validation error whose text is exactly `message` (no "Value error, " prefix)."""
    return PydanticCustomError(error_type, "{problem}", {"problem": message})
