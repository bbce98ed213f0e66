"""SlackPager through the real slack_sdk client against the Slack Web API contract server."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.page import EvidenceLink, PageUpdate, page_for
from mlwarden.responders.slack import SlackPager
from mlwarden.responders.slack_approvals import APPROVAL_BLOCK_ID
from mlwarden.schemas.errors import ResponderError
from tests.contract_servers import fixtures
from tests.contract_servers.incidents import make_alert, make_ctx
from tests.contract_servers.slack import VALID_TOKEN, SlackContractServer

pytestmark = pytest.mark.integration
slack_server, slack_api = fixtures.slack_server, fixtures.slack_api
KEY = "fp-1/extraction/1"


def pager(api: SlackContractServer, token: str = VALID_TOKEN, **options: object) -> SlackPager:
    return SlackPager(SecretStr(token), "C0PAGES", base_url=api.base_url, **options)  # type: ignore[arg-type]


def first_page(**changes: object):  # type: ignore[no-untyped-def]
    return page_for(
        make_alert(),
        make_ctx(),
        "scraper on fraud-scorer",
        evidence=EvidenceLink("https://kibana.example"),
        **changes,  # type: ignore[arg-type]
    )


def update(change: IncidentChange, count: int, approval_step: str | None = None) -> PageUpdate:
    alerts = [make_alert(n) for n in range(1, count + 1)]
    latest = page_for(alerts[-1], make_ctx(*alerts), alerts[-1].summary)
    return PageUpdate(change, first_page(approval_step=approval_step), latest, count)


async def test_a_page_is_one_block_kit_message_with_its_channel_and_ts(
    slack_api: SlackContractServer,
) -> None:
    result = await pager(slack_api, mention="<!here>").page(first_page(), KEY, timeout_s=5)
    [message] = slack_api.top_level()
    assert result == {"channel": "C0PAGES", "ts": message.ts}
    assert message.text is not None
    assert message.text.startswith("<!here> PAGE [critical] extraction on model fraud-scorer")
    assert message.blocks is not None
    assert message.blocks[0]["text"]["text"] == "CRITICAL · extraction on fraud-scorer"
    assert message.metadata == {
        "event_type": "mlwarden_page",
        "event_payload": {"incident_id": "fp-1", "idempotency_key": KEY},
    }
    auth = slack_api.requests[0].headers["authorization"]
    assert auth == f"Bearer {VALID_TOKEN}"


async def test_the_same_key_posts_once(slack_api: SlackContractServer) -> None:
    slack = pager(slack_api)
    first = await slack.page(first_page(), KEY)
    again = await slack.page(first_page(), KEY)
    assert again == first
    assert len(slack_api.top_level()) == 1


async def test_repeats_go_to_the_thread_and_update_the_status(
    slack_api: SlackContractServer,
) -> None:
    slack = pager(slack_api)
    earlier = await slack.page(first_page(), KEY)
    for count in (2, 3):
        result = await slack.follow_up(update(IncidentChange.REPEAT, count), earlier, f"{KEY}#r")
        assert result["ts"] == earlier["ts"]
    parent = slack_api.message("C0PAGES", earlier["ts"])
    replies = slack_api.thread("C0PAGES", earlier["ts"])
    assert [r.text for r in replies] == [
        "Alert #2: query distribution of c-scraper-01 looks synthetic (alert 2) "
        "(score 0.972, threshold 0.9)",
        "Alert #3: query distribution of c-scraper-01 looks synthetic (alert 3) "
        "(score 0.973, threshold 0.9)",
    ]
    assert parent.updates == 2
    assert parent.blocks is not None
    assert "*Firing* · 3 alert(s) · latest 2026-11-23 14:07:00 UTC" in str(parent.blocks)
    assert len(slack_api.top_level()) == 1


async def test_resolution_updates_the_message_and_drops_the_approval_buttons(
    slack_api: SlackContractServer,
) -> None:
    slack = pager(slack_api)
    earlier = await slack.page(first_page(approval_step="rollback"), KEY)
    parent = slack_api.message("C0PAGES", earlier["ts"])
    assert APPROVAL_BLOCK_ID in str(parent.blocks)
    acked = await slack.follow_up(update(IncidentChange.ACKNOWLEDGED, 1, "rollback"), earlier, "a")
    assert "reply_ts" not in acked
    assert "*Acknowledged*" in str(parent.blocks)
    assert APPROVAL_BLOCK_ID in str(parent.blocks)
    result = await slack.follow_up(update(IncidentChange.RESOLVED, 2, "rollback"), earlier, "r")
    assert "*Resolved* · 2 alert(s)" in str(parent.blocks)
    assert APPROVAL_BLOCK_ID not in str(parent.blocks)
    [reply] = slack_api.thread("C0PAGES", earlier["ts"])
    assert reply.ts == result["reply_ts"]
    assert reply.text == ":white_check_mark: Resolved after 2 alert(s)."


async def test_notify_goes_to_the_notify_channel_without_the_mention(
    slack_api: SlackContractServer,
) -> None:
    slack = pager(slack_api, notify_channel="tickets", mention="<!here>")
    result = await slack.notify(first_page(), KEY)
    assert result["channel"] == "C0TICKETS"
    [message] = slack_api.top_level("C0TICKETS")
    assert message.text is not None
    assert message.text.startswith("PAGE [critical]")


async def test_a_429_retry_after_is_waited_out_by_the_client(
    slack_api: SlackContractServer,
) -> None:
    slack_api.fail_next(1, status=429, retry_after="1")
    started = time.monotonic()
    result = await pager(slack_api).page(first_page(), KEY, timeout_s=10)
    assert time.monotonic() - started >= 1.0
    assert len(slack_api.requests) == 2
    assert [m.ts for m in slack_api.top_level()] == [result["ts"]]


async def test_a_rate_limit_that_outlasts_the_client_is_retryable_with_its_hint(
    slack_api: SlackContractServer,
) -> None:
    slack_api.fail_next(2, status=429, retry_after="0")
    with pytest.raises(ResponderError) as caught:
        await pager(slack_api).page(first_page(), KEY, timeout_s=10)
    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 0.0
    assert "ratelimited" in str(caught.value)
    assert slack_api.top_level() == []


async def test_a_slack_outage_is_retryable(slack_api: SlackContractServer) -> None:
    slack_api.fail_next(1, status=503, retry_after=None)
    with pytest.raises(ResponderError) as caught:
        await pager(slack_api).page(first_page(), KEY)
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("token", "code", "hint"),
    [("xoxb-not-the-token", "invalid_auth", "SLACK_TOKEN"), ("", "not_authed", "xoxb-")],
)
async def test_bad_auth_is_permanent_and_says_what_to_fix(
    slack_api: SlackContractServer, token: str, code: str, hint: str
) -> None:
    with pytest.raises(ResponderError) as caught:
        await pager(slack_api, token=token).page(first_page(), KEY)
    assert caught.value.retryable is False
    assert code in str(caught.value)
    assert hint in str(caught.value)
    assert "xoxb-not-the-token" not in str(caught.value)


async def test_an_unknown_channel_is_permanent(slack_api: SlackContractServer) -> None:
    slack = SlackPager(SecretStr(VALID_TOKEN), "C0NOPE", base_url=slack_api.base_url)
    with pytest.raises(ResponderError, match="channel_not_found") as caught:
        await slack.page(first_page(), KEY)
    assert caught.value.retryable is False


async def test_updating_a_deleted_message_is_permanent(slack_api: SlackContractServer) -> None:
    earlier = {"channel": "C0PAGES", "ts": "1.000001"}
    with pytest.raises(ResponderError, match="message_not_found") as caught:
        await pager(slack_api).follow_up(update(IncidentChange.RESOLVED, 1), earlier, "k")
    assert caught.value.retryable is False


async def test_nothing_reachable_is_retryable() -> None:
    slack = SlackPager(SecretStr(VALID_TOKEN), "C0PAGES", base_url="http://127.0.0.1:9/api/")
    with pytest.raises(ResponderError, match="could not be reached") as caught:
        await slack.page(first_page(), KEY, timeout_s=5)
    assert caught.value.retryable is True
