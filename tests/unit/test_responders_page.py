"""ConsolePager: one readable line per page, once per idempotency key, failures typed."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from mlwarden.responders.page import ConsolePager, Page, Pager, format_page
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.errors import ResponderError


def make_page(**changes: Any) -> Page:
    fields: dict[str, Any] = {
        "severity": Severity.CRITICAL,
        "summary": "too many queries",
        "incident_id": "fp-1",
        "alert_id": "a-1",
        "kind": AlertKind.ABUSE,
        "detector": "query_budget",
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": "c-42",
        "playbook": "abuse-query-budget",
    }
    return Page(**(fields | changes))


def test_the_line_names_severity_kind_model_client_and_incident() -> None:
    assert format_page(make_page()) == (
        "PAGE [critical] abuse on model fraud-v1 client c-42: too many queries (incident fp-1)"
    )
    assert format_page(make_page(client_id=None, kind=AlertKind.DRIFT)) == (
        "PAGE [critical] drift on model fraud-v1: too many queries (incident fp-1)"
    )


def test_untrusted_text_cannot_break_the_line_or_the_terminal() -> None:
    line = format_page(make_page(client_id="evil\x1b[2J\nPAGE [info] fake", summary="a\r\n\tb"))
    assert "\n" not in line
    assert "\x1b" not in line
    assert "\r" not in line
    assert line.endswith(": a b (incident fp-1)")


async def test_pages_go_to_the_stream_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    pager: Pager = ConsolePager(stream)
    with caplog.at_level(logging.INFO, logger="mlwarden.responders.page"):
        result = await pager.page(make_page(), "fp-1/abuse/0")
    line = format_page(make_page())
    assert stream.getvalue() == line + "\n"
    assert result == {"channel": "console", "line": line}
    [logged] = caplog.records
    assert logged.getMessage() == line
    assert logged.levelno == logging.CRITICAL


async def test_one_key_prints_once_and_returns_the_first_result() -> None:
    stream = io.StringIO()
    pager = ConsolePager(stream)
    first = await pager.page(make_page(), "k")
    again = await pager.page(make_page(summary="different text, same key"), "k")
    assert again == first
    assert stream.getvalue().count("\n") == 1
    await pager.page(make_page(), "other-key")
    assert stream.getvalue().count("\n") == 2


async def test_remembered_keys_are_bounded_oldest_first() -> None:
    stream = io.StringIO()
    pager = ConsolePager(stream, remember=2)
    for key in ("a", "b", "c"):
        await pager.page(make_page(), key)
    await pager.page(make_page(), "c")  # still remembered
    await pager.page(make_page(), "a")  # forgotten: delivered again
    assert stream.getvalue().count("\n") == 4


async def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    await ConsolePager().page(make_page(), "k")
    assert capsys.readouterr().out.startswith("PAGE [critical] abuse")


async def test_a_closed_stream_is_a_non_retryable_responder_error() -> None:
    stream = io.StringIO()
    stream.close()
    with pytest.raises(ResponderError) as caught:
        await ConsolePager(stream).page(make_page(), "k")
    assert caught.value.retryable is False


class FlakyStream(io.StringIO):
    """Fails its first write with an OSError, as a full disk or a broken pipe would."""

    failed = False

    def write(self, text: str, /) -> int:
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        return super().write(text)


async def test_an_os_error_is_retryable_and_the_key_is_not_remembered_as_delivered() -> None:
    stream = FlakyStream()
    pager = ConsolePager(stream)
    with pytest.raises(ResponderError) as caught:
        await pager.page(make_page(), "k")
    assert caught.value.retryable is True
    assert stream.getvalue() == ""
    await pager.page(make_page(), "k")
    assert stream.getvalue() == format_page(make_page()) + "\n"
