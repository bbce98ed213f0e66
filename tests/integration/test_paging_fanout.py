"""The page and notify steps over every pager at once, built from settings, real clients."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.paging_settings import Paging, PagingSettings, build_pagers
from mlwarden.responders.params import NotifyParams, PageParams
from mlwarden.responders.slack_approvals import parse_approval
from mlwarden.schemas.errors import ResponderError
from tests.contract_servers import fixtures
from tests.contract_servers.incidents import follow_up_ctx, make_alert, make_ctx
from tests.contract_servers.pagerduty import ROUTING_KEY, PagerDutyContractServer
from tests.contract_servers.slack import VALID_TOKEN, SlackContractServer

pytestmark = pytest.mark.integration
slack_server, slack_api = fixtures.slack_server, fixtures.slack_api
pagerduty_server, pagerduty_api = fixtures.pagerduty_server, fixtures.pagerduty_api
SIGNING_SECRET = SecretStr("signing-secret-of-the-test-app")
PARAMS = PageParams(message="scraper on fraud-scorer")


@pytest.fixture
async def paging(
    slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> AsyncIterator[Paging]:
    built = build_pagers(
        PagingSettings(
            slack_token=SecretStr(VALID_TOKEN),
            slack_channel="C0PAGES",
            slack_notify_channel="C0TICKETS",
            slack_base_url=slack_api.base_url,
            slack_signing_secret=SIGNING_SECRET,
            pagerduty_routing_key=SecretStr(ROUTING_KEY),
            pagerduty_url=pagerduty_api.events_url,
            kibana_url="https://kibana.example",
        ),
        console_stream=io.StringIO(),
    )
    yield built
    await built.aclose()


async def test_a_page_reaches_every_pager_with_the_evidence_link(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    ctx = make_ctx()
    result = await paging.page(PARAMS, ctx)
    assert set(result["delivered"]) == {"console", "slack", "pagerduty"}
    assert result["failed"] == {}
    evidence = result["page"]["evidence_url"]
    assert evidence.startswith("https://kibana.example/app/discover#/?")
    [message] = slack_api.top_level("C0PAGES")
    assert evidence in json.dumps(message.blocks)
    [incident] = pagerduty_api.by_dedup_key(ctx.idempotency_key)
    assert incident.events[0]["links"][0]["href"] == evidence
    assert ROUTING_KEY not in json.dumps(result)
    assert VALID_TOKEN not in json.dumps(result)


async def test_one_pager_failing_still_pages_and_reports_it(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    pagerduty_api.fail_next(1, status=500, retry_after=None)
    ctx = make_ctx()
    result = await paging.page(PARAMS, ctx)
    assert set(result["delivered"]) == {"console", "slack"}
    assert result["failed"]["pagerduty"]["retryable"] is True
    assert "HTTP 500" in result["failed"]["pagerduty"]["error"]
    assert len(slack_api.top_level()) == 1
    # The resolution goes only where the page went.
    resolved = await paging.page.follow_up(
        follow_up_ctx("resolved"), result, IncidentChange.RESOLVED
    )
    assert set(resolved["delivered"]) == {"console", "slack"}
    assert pagerduty_api.by_dedup_key(ctx.idempotency_key) == []


async def test_a_page_that_reached_no_human_fails_even_if_the_console_printed_it(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    slack_api.fail_next(2, status=429, retry_after="0")  # outlasts slack_sdk's one retry
    pagerduty_api.fail_next(1, status=429, retry_after="3")
    with pytest.raises(ResponderError) as caught:
        await paging.page(PARAMS, make_ctx())
    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 3.0
    assert "slack" in str(caught.value)
    assert "pagerduty" in str(caught.value)


async def test_a_permanent_failure_of_every_human_pager_is_permanent(
    slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    broken = build_pagers(
        PagingSettings(
            slack_token=SecretStr("xoxb-revoked"),
            slack_channel="C0PAGES",
            slack_base_url=slack_api.base_url,
            pagerduty_routing_key=SecretStr(ROUTING_KEY),
            pagerduty_url=pagerduty_api.events_url,
            console=False,
        )
    )
    pagerduty_api.fail_next(1, status=400, retry_after=None)
    with pytest.raises(ResponderError) as caught:
        await broken.page(PARAMS, make_ctx())
    await broken.aclose()
    assert caught.value.retryable is False
    assert "invalid_auth" in str(caught.value)


async def test_service_picks_one_pager(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    result = await paging.page(PageParams(message="m", service="pagerduty"), make_ctx())
    assert set(result["delivered"]) == {"pagerduty"}
    assert slack_api.messages == []


async def test_the_incident_lifecycle_in_slack_and_pagerduty(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    alerts = [make_alert(n) for n in (1, 2, 3)]
    ctx = make_ctx(alerts[0])
    page = await paging.page(PARAMS, ctx)
    for n in (2, 3):
        await paging.page.follow_up(
            follow_up_ctx("repeat", *alerts[:n]), page, IncidentChange.REPEAT
        )
    await paging.page.follow_up(follow_up_ctx("resolved", *alerts), page, IncidentChange.RESOLVED)
    slack_ts = page["delivered"]["slack"]["ts"]
    parent = slack_api.message("C0PAGES", slack_ts)
    assert parent.updates == 3
    assert "*Resolved* · 3 alert(s)" in str(parent.blocks)
    assert len(slack_api.thread("C0PAGES", slack_ts)) == 3
    [incident] = pagerduty_api.by_dedup_key(ctx.idempotency_key)
    assert incident.status == "resolved"
    assert [e["event_action"] for e in incident.events] == ["trigger", "resolve"]


async def test_notify_is_a_slack_message_in_the_ticket_channel_without_paging(
    paging: Paging, slack_api: SlackContractServer, pagerduty_api: PagerDutyContractServer
) -> None:
    result = await paging.notify(NotifyParams(message="drift on fraud-scorer"), make_ctx())
    assert result["delivered"]["slack"]["channel"] == "C0TICKETS"
    assert len(slack_api.top_level("C0TICKETS")) == 1
    assert pagerduty_api.requests == []
    resolved = await paging.notify.follow_up(
        follow_up_ctx("resolved"), result, IncidentChange.RESOLVED
    )
    assert resolved["delivered"]["slack"]["status"] == "resolved"


async def test_an_approval_page_round_trips_a_signed_click(
    paging: Paging, slack_api: SlackContractServer
) -> None:
    await paging.page.ask_approval(PARAMS, make_ctx(key="fp-1/poisoning/2"), step="rollback")
    [message] = slack_api.top_level()
    [actions] = [b for b in message.blocks or [] if b.get("block_id") == "mlwarden.approval"]
    approve = actions["elements"][0]
    # What Slack sends back when on-call clicks Approve on that message.
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL", "username": "ana"},
        "channel": {"id": message.channel},
        "container": {"type": "message", "message_ts": message.ts},
        "actions": [
            {"type": "button", "action_id": approve["action_id"], "value": approve["value"]}
        ],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    now = int(time.time())
    signature = hmac.new(
        SIGNING_SECRET.get_secret_value().encode(), f"v0:{now}:".encode() + body, hashlib.sha256
    ).hexdigest()
    headers = {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": f"v0={signature}"}
    decision = parse_approval(body, headers, SIGNING_SECRET)
    assert decision is not None
    assert (decision.incident_id, decision.step, decision.decision) == (
        "fp-1",
        "rollback",
        "approve",
    )
    assert decision.message_ts == message.ts
