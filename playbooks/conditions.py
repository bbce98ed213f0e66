"""Conditions in playbooks: JMESPath expressions, compiled when the playbook loads.

JMESPath rather than Python `eval` or Jinja: it is a query language with no side effects, no
attribute access into Python objects and no loops, so an attacker-influenced alert field can at
worst make a condition false. Truthiness is JMESPath's own: `false`, `null`, `""`, `[]` and `{}`
are false, everything else true. Examples::

    condition: "severity == 'critical' && score > `100`"
    condition: "labels.pattern == 'sybil'"
    when: "alert.severity != 'critical'"          # a step's `when` sees {alert, incident}

A syntax error, an unknown function or a wrong number of arguments is a load-time error; a
type error while evaluating real data (comparing a string to a number) makes the condition
false, the safe reading for a response playbook.
"""

from __future__ import annotations

import difflib
import functools
from typing import Annotated, Any, Final

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath import functions as jmespath_functions
from jmespath.parser import ParsedResult
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_EXPRESSION_CHARS: Final = 1000


class ConditionError(ValueError):
    """An expression that cannot be compiled (or calls what JMESPath does not have)."""


@functools.lru_cache(maxsize=512)
def compile_condition(expression: str) -> ParsedResult:
    """Parse `expression`; raise ConditionError saying where and why it is not JMESPath."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ConditionError(f"expression is over {MAX_EXPRESSION_CHARS} characters")
    try:
        parsed = jmespath.compile(expression)
    except jmespath_errors.ParseError as exc:
        raise ConditionError(
            f"not a JMESPath expression: {exc.msg} at character {exc.lex_position} "
            f"(token {exc.token_value!r}); quote string literals as 'text' and numbers as `5`"
        ) from None
    except jmespath_errors.JMESPathError as exc:
        raise ConditionError(f"not a JMESPath expression: {exc}") from None
    _check_functions(parsed.parsed)
    return parsed


_FUNCTIONS: Final = jmespath_functions.Functions().FUNCTION_TABLE


def _check_functions(node: Any) -> None:
    """Refuse unknown functions and wrong arities before any alert arrives (JMESPath itself
    only notices them when evaluation reaches the call)."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "function_expression":
        name = str(node.get("value"))
        spec = _FUNCTIONS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(_FUNCTIONS), n=1)
            hint = f" (did you mean {close[0]}()?)" if close else ""
            raise ConditionError(f"unknown JMESPath function {name}(){hint}")
        signature = spec["signature"]
        given = len(node.get("children", []))
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if given < len(signature) or (given > len(signature) and not variadic):
            raise ConditionError(
                f"{name}() takes {len(signature)}{' or more' if variadic else ''} "
                f"argument(s), {given} given"
            )
    for child in node.get("children", []):
        _check_functions(child)


def holds(expression: str, data: dict[str, Any]) -> bool:
    """Evaluate `expression` over `data`; a type error on real data counts as false."""
    try:
        return _truthy(compile_condition(expression).search(data))
    except (jmespath_errors.JMESPathError, TypeError, ValueError):
        # jmespath raises a bare TypeError when ordering a string against a number
        return False


def _truthy(value: Any) -> bool:
    return value is not None and value is not False and value != "" and value != [] and value != {}


def _checked(expression: str) -> str:
    try:
        compile_condition(expression)
    except ConditionError as exc:
        raise PydanticCustomError("condition", "{problem}", {"problem": str(exc)}) from None
    return expression


Condition = Annotated[
    str,
    Field(min_length=1, max_length=MAX_EXPRESSION_CHARS, description="A JMESPath expression."),
    AfterValidator(_checked),
]
"""A pydantic field type: a JMESPath expression that compiled."""
