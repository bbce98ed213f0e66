"""ConsolePager and the page/notify responders over it; evidence links; paging settings."""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import unquote

import pytest
from pydantic import SecretStr, ValidationError

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.notify import NotifyResponder
from mlwarden.responders.page import (
    ConsolePager,
    EvidenceLink,
    Page,
    Pager,
    PageResponder,
    format_page,
)
from mlwarden.responders.paging_settings import PagingSettings, build_pagers
from mlwarden.responders.params import NotifyParams, PageParams
from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.errors import ResponderError
from tests.contract_servers.incidents import DETECTED, follow_up_ctx, make_alert, make_ctx


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


# --- PageResponder and NotifyResponder over the console -------------------------------------


def console_responder(stream: io.StringIO) -> PageResponder:
    return PageResponder({"console": ConsolePager(stream)})


async def test_the_responder_pages_the_console_once_and_records_the_page() -> None:
    stream = io.StringIO()
    responder = console_responder(stream)
    ctx = make_ctx()
    result = await responder(PageParams(message="scraper on fraud-scorer"), ctx)
    again = await responder(PageParams(message="scraper on fraud-scorer"), ctx)
    line = (
        "PAGE [critical] extraction on model fraud-scorer client c-scraper-01: "
        "scraper on fraud-scorer (incident fp-1)"
    )
    assert stream.getvalue() == line + "\n"
    assert result["delivered"] == {"console": {"channel": "console", "line": line}}
    assert result["failed"] == {}
    assert again["delivered"] == result["delivered"]
    page = Page.model_validate(result["page"])
    assert (page.score, page.threshold, page.playbook) == (make_alert().score, 0.9, "extraction")
    json.dumps(result)  # recorded as JSON by the engine


async def test_a_severity_override_changes_the_page() -> None:
    stream = io.StringIO()
    await console_responder(stream)(PageParams(message="m", severity=Severity.WARNING), make_ctx())
    assert stream.getvalue().startswith("PAGE [warning] ")


async def test_a_service_that_is_not_configured_is_a_permanent_error_saying_what_to_set() -> None:
    with pytest.raises(ResponderError) as caught:
        await console_responder(io.StringIO())(
            PageParams(message="m", service="pagerduty"), make_ctx()
        )
    assert caught.value.retryable is False
    assert "MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY" in str(caught.value)


async def test_no_pager_at_all_is_a_permanent_error() -> None:
    with pytest.raises(ResponderError) as caught:
        await PageResponder({})(PageParams(message="m"), make_ctx())
    assert caught.value.retryable is False


async def test_a_page_that_reached_nobody_fails_the_step() -> None:
    stream = io.StringIO()
    stream.close()
    with pytest.raises(ResponderError) as caught:
        await console_responder(stream)(PageParams(message="m"), make_ctx())
    assert "reached nobody" in str(caught.value)
    assert caught.value.retryable is False


async def test_resolution_prints_once_and_repeats_print_nothing() -> None:
    stream = io.StringIO()
    responder = console_responder(stream)
    first = await responder(PageParams(message="m"), make_ctx())
    alerts = (make_alert(1), make_alert(2))
    repeat = await responder.follow_up(
        follow_up_ctx("repeat", *alerts), first, IncidentChange.REPEAT
    )
    assert repeat["delivered"]["console"]["skipped"] == "repeat"
    for _ in range(2):  # a replayed resolution is delivered once
        await responder.follow_up(
            follow_up_ctx("resolved", *alerts), first, IncidentChange.RESOLVED
        )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("RESOLVED [critical] extraction on model fraud-scorer")


async def test_a_follow_up_of_a_step_that_paged_nothing_does_nothing() -> None:
    result = await console_responder(io.StringIO()).follow_up(
        follow_up_ctx("resolved"), {}, IncidentChange.RESOLVED
    )
    assert result == {"change": "resolved", "delivered": {}, "failed": {}}


async def test_notify_without_slack_is_a_console_line() -> None:
    stream = io.StringIO()
    notify = NotifyResponder(console=ConsolePager(stream))
    result = await notify(NotifyParams(message="drift on fraud-scorer"), make_ctx())
    assert stream.getvalue().startswith("NOTIFY [critical] extraction on model fraud-scorer")
    assert set(result["delivered"]) == {"console"}
    follow = await notify.follow_up(follow_up_ctx("resolved"), result, IncidentChange.RESOLVED)
    assert follow["delivered"] == {}


def test_the_evidence_link_opens_discover_on_the_incident() -> None:
    link = EvidenceLink("https://kibana.example:5601/", data_view_id="mlwarden-evidence")
    url = link.for_incident('fp-"1', DETECTED)
    base, _, fragment = url.partition("#")
    assert base == "https://kibana.example:5601/app/discover"
    state = unquote(fragment)
    assert 'query:(language:kuery,query:\'mlwarden.incident.id:"fp-\\"1"\')' in state
    assert "index:'mlwarden-evidence'" in state
    assert "time:(from:'2026-11-23T13:05:00+00:00',to:now)" in state
    assert " " not in url


def test_rison_quotes_are_escaped_in_the_link() -> None:
    state = unquote(EvidenceLink("http://k").for_incident("it's!", None))
    assert 'mlwarden.incident.id:"it!\'s!!"' in state
    assert "from:now-7d" in state


def test_settings_need_a_slack_channel_with_the_token() -> None:
    with pytest.raises(ValidationError, match="SLACK_CHANNEL"):
        PagingSettings(slack_token=SecretStr("xoxb-1"))


def test_a_malformed_pagerduty_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        PagingSettings(pagerduty_routing_key=SecretStr("short-secret-key"))
    assert "32-character" in str(caught.value)
    assert "short-secret-key" not in str(caught.value)


async def test_build_pagers_builds_only_what_is_configured() -> None:
    console_only = build_pagers(PagingSettings(), console_stream=io.StringIO())
    assert list(console_only.pagers) == ["console"]
    settings = PagingSettings(
        slack_token=SecretStr("xoxb-1"),
        slack_channel="C0PAGES",
        pagerduty_routing_key=SecretStr("k" * 32),
        console=False,
    )
    everything = build_pagers(settings)
    assert list(everything.pagers) == ["slack", "pagerduty"]
    assert "k" * 32 not in settings.model_dump_json() + repr(settings)
    await everything.aclose()
    await console_only.aclose()
