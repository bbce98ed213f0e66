"""Durations as people write them in playbooks and on the command line: `90s`, `5m`, `2h`, `1d`.

One parser for every duration mlwarden reads (step timeouts, cooldowns, silences, rate-limit
expiry), so `5 minuets` gets the same helpful error everywhere::

    "5 minuets" is not a duration (e.g. "5m", "90s", "2h")

Compound forms (`1h30m`) are accepted; bare numbers are refused because "5" could mean seconds
or minutes and an incident at 3 a.m. is the wrong time to find out which.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE: Final = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"
EXAMPLES: Final = 'e.g. "5m", "90s", "2h", "1h30m"'


def parse_duration(text: str) -> timedelta:
    """`"1h30m"` → `timedelta(hours=1, minutes=30)`; raises ValueError with an example."""
    compact = text.strip().replace(" ", "") if isinstance(text, str) else ""
    if not compact or _WHOLE.fullmatch(compact) is None:
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    seconds = sum(float(value) * _UNIT_SECONDS[unit] for value, unit in _PART.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # past timedelta's ~2.7 million years
        raise ValueError(f"{text!r} is too long to be a duration ({EXAMPLES})") from None


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: 5400 s → `1h30m`, 0.5 s → `500ms`."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


def _coerce(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"{value!r} is not a duration ({EXAMPLES}); write it as a string with a unit")


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["5m", "90s"]}),
]
"""A pydantic field type: accepts `"5m"`-style strings, holds a `timedelta`, dumps back to text."""
