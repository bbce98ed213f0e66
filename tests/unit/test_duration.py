"""Durations as people write them: one parser, one error message, exact round trips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mlwarden.schemas.duration import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("500ms", 0.5),
        (" 1h 30m ", 5400),
        ("1.5h", 5400),
    ],
)
def test_parses_what_people_write(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5 minuets", "5", "", "m", "-5m", "5mm", "1h-30m", "five m"])
def test_refuses_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r'is not a duration \(e\.g\. "5m", "90s"'):
        parse_duration(text)


class _Holder(BaseModel):
    value: Duration


def test_the_pydantic_type_refuses_numbers_and_dumps_text() -> None:
    with pytest.raises(ValidationError, match="write it as a string with a unit"):
        _Holder.model_validate({"value": 5})
    assert _Holder(value="1h30m").model_dump(mode="json") == {"value": "1h30m"}  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_is_exact_to_the_millisecond(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


def test_absurdly_long_durations_are_value_errors_not_overflows() -> None:
    with pytest.raises(ValueError, match="too long to be a duration"):
        parse_duration("99999999999999d")


_units = st.sampled_from(["ms", "s", "m", "h", "d", "w", "x", " ", ""])
_texty = st.lists(st.tuples(st.integers(0, 10**20).map(str), _units), max_size=4).map(
    lambda parts: "".join(n + u for n, u in parts)
)


@given(st.one_of(st.text(max_size=30), _texty))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    outcome: timedelta | ValueError
    try:
        outcome = parse_duration(text)
    except ValueError as error:
        outcome = error
    if isinstance(outcome, ValueError):
        assert "duration" in str(outcome)
    else:
        assert outcome >= timedelta(0)
