"""Message templates: Jinja2, sandboxed, strict, and checked when the playbook loads.

Alert fields are attacker-influenced (a client id is whatever the client sent), and a template is
evaluated for every alert, so templates run in Jinja2's `SandboxedEnvironment` (no attribute
walks to `__class__`, bounded `range`) with `StrictUndefined` (a misspelt `alert.clientid` is an
error, not an empty string). The loader renders each template once against `SAMPLE_ALERT`, so a
typo fails at load time and not in the middle of an incident.

The only variable is `alert`, the `Alert` being handled. `alert.evidence` and `alert.labels` are
detector-specific: at load time every key of them exists and renders as a placeholder string, so
convert evidence values explicitly (`alert.evidence.requests | int`) before doing arithmetic.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Final

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from mlwarden.schemas.alert import Alert, AlertKind, Severity

# Bounds for the two operators that can blow up memory or CPU with tiny input ("x" * 10**9).
_MAX_REPEAT: Final = 10_000
_MAX_EXPONENT: Final = 64

# What a broken template can raise while rendering: Jinja's own errors plus the Python errors of
# the expressions it evaluates (1/0, "a" + 1, int("x") inside a filter, deep macro recursion).
_RENDER_ERRORS: Final = (
    TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
)


class TemplateRenderError(ValueError):
    """A template that cannot be compiled or rendered; the message says why.

    Internal to `mlwarden.playbooks`: the loader turns it into a `PlaybookError` with the
    template's position, the engine into a failed step record.
    """


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox plus limits on `*` and `**`, the sandbox docs' own example of interception."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right!r} is over the limit of {_MAX_EXPONENT}")
        if operator == "*":
            for sized, times in ((left, right), (right, left)):
                if (
                    isinstance(sized, str | list | tuple)
                    and isinstance(times, int)
                    and len(sized) * times > _MAX_REPEAT
                ):
                    raise SecurityError(f"repetition longer than {_MAX_REPEAT} items")
        return super().call_binop(context, operator, left, right)


_ENV: Final = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


class _EveryKey(dict[str, Any]):
    """A mapping in which every key exists: stands in for detector-specific evidence at load."""

    def __missing__(self, key: str) -> str:
        return f"<{key}>"


_SAMPLE_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)

SAMPLE_ALERT: Final = Alert(
    alert_id="sample-alert",
    fingerprint="sample-fingerprint",
    kind=AlertKind.ABUSE,
    detector="sample_detector",
    severity=Severity.WARNING,
    model_id="sample-model",
    model_version="1",
    client_id="sample-client",
    detected_at=_SAMPLE_TIME,
    emitted_at=_SAMPLE_TIME,
    score=2.0,
    threshold=1.0,
    summary="sample summary",
).model_copy(update={"evidence": _EveryKey(), "labels": _EveryKey()})


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> Template:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"template syntax error on template line {exc.lineno}: {exc.message}"
        ) from None
    except _RENDER_ERRORS as exc:
        raise TemplateRenderError(f"template cannot be compiled: {exc}") from None


def render(source: str, alert: Alert) -> str:
    """Render template `source` with `alert` in context; raise TemplateRenderError on failure."""
    template = _compile(source)
    try:
        return template.render(alert=alert)
    except UndefinedError as exc:
        raise TemplateRenderError(f"template uses something undefined: {exc.message}") from None
    except _RENDER_ERRORS as exc:
        raise TemplateRenderError(f"template failed to render: {exc}") from None


def check(source: str) -> None:
    """Compile and render `source` against `SAMPLE_ALERT`: the load-time check of a template."""
    render(source, SAMPLE_ALERT)
