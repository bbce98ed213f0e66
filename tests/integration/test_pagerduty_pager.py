"""PagerDutyPager through httpx against the Events API v2 contract server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from mlwarden.responders.base import IncidentChange, RetryPolicy, call_with_retries
from mlwarden.responders.page import PageUpdate, page_for
from mlwarden.responders.pagerduty import PagerDutyPager
from mlwarden.schemas.errors import ResponderError
from tests.contract_servers import fixtures
from tests.contract_servers.incidents import make_alert, make_ctx
from tests.contract_servers.pagerduty import ROUTING_KEY, PagerDutyContractServer

pytestmark = pytest.mark.integration
pagerduty_server, pagerduty_api = fixtures.pagerduty_server, fixtures.pagerduty_api
KEY = "fp-1/extraction/1"
PAGE = page_for(make_alert(), make_ctx(), "scraper on fraud-scorer")


@pytest.fixture
async def pager(pagerduty_api: PagerDutyContractServer) -> AsyncIterator[PagerDutyPager]:
    pd = PagerDutyPager(SecretStr(ROUTING_KEY), url=pagerduty_api.events_url)
    yield pd
    await pd.aclose()


def change(kind: IncidentChange) -> PageUpdate:
    return PageUpdate(kind, PAGE, PAGE, 1)


async def test_a_page_triggers_one_alert_keyed_by_the_step(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    result = await pager.page(PAGE, KEY, timeout_s=5)
    assert result == {"dedup_key": KEY, "event_action": "trigger"}
    [incident] = pagerduty_api.by_dedup_key(KEY)
    assert incident.status == "triggered"
    assert incident.events[0]["payload"]["summary"] == "scraper on fraud-scorer"


async def test_triggering_twice_with_the_same_key_is_one_open_alert(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    await pager.page(PAGE, KEY)
    await pager.page(PAGE, KEY)  # a retry, or the engine after a restart
    [incident] = pagerduty_api.by_dedup_key(KEY)
    assert incident.status == "triggered"
    assert len(incident.events) == 2


async def test_acknowledge_then_resolve_close_the_same_alert(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    earlier = await pager.page(PAGE, KEY)
    repeat = await pager.follow_up(change(IncidentChange.REPEAT), earlier, f"{KEY}#repeat")
    assert repeat == {"dedup_key": KEY, "skipped": "repeat"}
    await pager.follow_up(change(IncidentChange.ACKNOWLEDGED), earlier, f"{KEY}#acknowledged")
    [incident] = pagerduty_api.by_dedup_key(KEY)
    assert incident.status == "acknowledged"
    result = await pager.follow_up(change(IncidentChange.RESOLVED), earlier, f"{KEY}#resolved")
    assert result == {"dedup_key": KEY, "event_action": "resolve"}
    assert incident.status == "resolved"
    assert pagerduty_api.dropped == []


async def test_a_429_is_retryable_with_the_retry_after_hint(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    pagerduty_api.fail_next(1, status=429, retry_after="7")
    with pytest.raises(ResponderError) as caught:
        await pager.page(PAGE, KEY)
    assert caught.value.retryable is True
    assert caught.value.retry_after_s == 7.0
    assert pagerduty_api.by_dedup_key(KEY) == []


async def test_the_retry_policy_delivers_after_a_429(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    pagerduty_api.fail_next(1, status=429, retry_after="0")
    ctx = make_ctx()
    # initial_backoff 1s: tenacity 9.x warns on any other `initial` (see the report)
    policy = RetryPolicy.model_validate({"retries": 2, "initial_backoff": "1s"})
    result = await call_with_retries(
        lambda: pager.page(PAGE, ctx.idempotency_key, timeout_s=ctx.remaining_s()),
        policy,
        ctx.deadline,
    )
    assert result["dedup_key"] == ctx.idempotency_key
    assert len(pagerduty_api.requests) == 2
    assert len(pagerduty_api.by_dedup_key(ctx.idempotency_key)) == 1


async def test_5xx_is_retryable(
    pager: PagerDutyPager, pagerduty_api: PagerDutyContractServer
) -> None:
    pagerduty_api.fail_next(1, status=502, retry_after=None)
    with pytest.raises(ResponderError) as caught:
        await pager.page(PAGE, KEY)
    assert caught.value.retryable is True
    assert caught.value.retry_after_s is None


async def test_a_400_is_permanent_and_never_shows_the_routing_key(
    pagerduty_api: PagerDutyContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "x" * 31  # one character short of an integration key
    pd = PagerDutyPager(SecretStr(wrong_key), url=pagerduty_api.events_url)
    with caplog.at_level(logging.DEBUG), pytest.raises(ResponderError) as caught:
        await pd.page(PAGE, KEY)
    await pd.aclose()
    assert caught.value.retryable is False
    assert "routing_key" in str(caught.value)
    assert "ROUTING_KEY" in str(caught.value)  # the hint names the setting
    assert wrong_key not in str(caught.value)
    assert wrong_key not in caplog.text


async def test_the_routing_key_is_never_in_results_or_logs(
    pager: PagerDutyPager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        result = await pager.page(PAGE, KEY)
        earlier = result
        result2 = await pager.follow_up(change(IncidentChange.RESOLVED), earlier, "k#resolved")
    assert ROUTING_KEY not in str(result) + str(result2) + caplog.text


async def test_an_unreachable_endpoint_is_retryable() -> None:
    pd = PagerDutyPager(SecretStr(ROUTING_KEY), url="http://127.0.0.1:9")
    with pytest.raises(ResponderError, match="could not be reached") as caught:
        await pd.page(PAGE, KEY, timeout_s=5)
    await pd.aclose()
    assert caught.value.retryable is True
