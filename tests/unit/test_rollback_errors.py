"""How registry failures are classified: retryable or permanent, with secrets kept out.

A real MLflow server cannot be made to answer 429 or 503 on demand, so these replies come from
httpx's own `MockTransport`; the happy paths and real failures run against the real server in
tests/integration/test_rollback_mlflow.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr

from mlwarden.responders.registry_mlflow import MlflowRegistry
from mlwarden.schemas.errors import ResponderError

TOKEN = "dapi-0123456789abcdef"

Handler = Callable[[httpx.Request], httpx.Response]


def registry(handler: Handler, url: str = "http://mlflow.test") -> MlflowRegistry:
    return MlflowRegistry(url, token=SecretStr(TOKEN), transport=httpx.MockTransport(handler))


async def failure(handler: Handler, url: str = "http://mlflow.test") -> ResponderError:
    adapter = registry(handler, url)
    try:
        with pytest.raises(ResponderError) as raised:
            await adapter.alias_version("fraud", "champion", timeout_s=5)
    finally:
        await adapter.aclose()
    assert TOKEN not in str(raised.value)
    return raised.value


def reply(status: int, body: str = "", **headers: str) -> Handler:
    return lambda request: httpx.Response(status, text=body, headers=headers)


async def test_429_is_retryable_and_carries_retry_after() -> None:
    error = await failure(
        reply(429, '{"error_code": "REQUEST_LIMIT_EXCEEDED"}', **{"Retry-After": "7"})
    )
    assert error.retryable is True
    assert error.retry_after_s == 7.0
    assert "429" in str(error)


async def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    error = await failure(reply(429, "", **{"Retry-After": when}))
    assert error.retry_after_s is not None
    assert 50 <= error.retry_after_s <= 61


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(status: int) -> None:
    error = await failure(reply(status, "upstream trouble"))
    assert error.retryable is True
    assert str(status) in str(error)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "rejected"),
        (401, "check the registry credentials"),
        (403, "check the registry credentials"),
        (404, "check the model name"),
        (409, "rejected"),
    ],
)
async def test_client_errors_are_permanent_and_say_what_to_check(status: int, hint: str) -> None:
    error = await failure(reply(status, '{"message": "nope"}'))
    assert error.retryable is False
    assert hint in str(error)
    assert "nope" in str(error)  # the registry's own words are quoted


async def test_a_token_echoed_by_the_server_is_scrubbed() -> None:
    error = await failure(reply(401, f"bad token Bearer {TOKEN}"))
    assert "***" in str(error)


async def test_credentials_in_the_url_never_reach_a_message() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    error = await failure(refuse, url="http://admin:hunter2@mlflow.test")
    assert error.retryable is True
    assert "hunter2" not in str(error)
    assert "cannot reach the mlflow registry at http://mlflow.test" in str(error)


async def test_timeouts_are_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await failure(slow)
    assert error.retryable is True
    assert "did not answer" in str(error)


async def test_a_reply_that_is_not_json_is_permanent() -> None:
    error = await failure(reply(200, "<html>login</html>"))
    assert error.retryable is False
    assert "not JSON" in str(error)


async def test_no_time_left_fails_before_sending() -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    adapter = registry(record)
    with pytest.raises(ResponderError, match="deadline passed") as raised:
        await adapter.alias_version("fraud", "champion", timeout_s=0)
    await adapter.aclose()
    assert raised.value.retryable is True
    assert sent == []


async def test_the_token_is_sent_as_a_bearer_header_and_timeouts_are_capped() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"registered_model": {"aliases": [{"alias": "champion", "version": "3"}]}}
        )

    adapter = MlflowRegistry(
        "http://mlflow.test/", token=SecretStr(TOKEN), timeout_s=2.5,
        transport=httpx.MockTransport(record),
    )  # fmt: skip
    assert await adapter.alias_version("fraud", "champion", timeout_s=60) == 3
    assert await adapter.alias_version("fraud", "challenger", timeout_s=60) is None
    await adapter.aclose()
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert seen[0].url.path == "/api/2.0/mlflow/registered-models/get"
    assert seen[0].extensions["timeout"]["read"] == 2.5
    assert TOKEN not in repr(adapter)
