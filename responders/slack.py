"""Slack pager and notifier: Block Kit messages through `slack_sdk`'s async Web API client.

First page: `chat.postMessage` to the paging channel; the result keeps `channel` and `ts`.
Follow-ups use that result: a repeat updates the parent's status line (`chat.update`) and
replies in its thread; acknowledgement updates the status; resolution updates it to
"Resolved", drops any approval buttons and replies in the thread.

Retries: the client's own `AsyncRateLimitErrorRetryHandler` waits out a 429's Retry-After
(once by default); every other failure becomes a `ResponderError` that says whether the
engine's one retry policy should try again (rate limits, 5xx, timeouts, connection errors)
or not (bad token, unknown channel, missing scope…).

Idempotency window: Slack has no dedup key. The engine records the step result (channel, ts)
before acknowledging the alert, follow-ups act on that recorded message, and this pager
remembers the keys it posted in this process. What remains: if the process dies after Slack
accepted `chat.postMessage` and before the engine stored the result, or a call times out on
our side after Slack accepted it, the retry posts the page again — at most one duplicate
message per such crash or timeout, never a lost page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC
from typing import Any, Final

import aiohttp
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.page import Page, PageUpdate, format_page, retry_after_seconds
from mlwarden.responders.slack_approvals import approval_actions
from mlwarden.schemas.alert import Severity
from mlwarden.schemas.errors import ResponderError

_LOG: Final = logging.getLogger(__name__)
DEFAULT_BASE_URL: Final = "https://slack.com/api/"

_EMOJI: Final = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":large_blue_circle:",
}
_RETRYABLE_ERRORS: Final = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout"}
)  # fmt: skip
_HINTS: Final = {
    "not_authed": "set MLWARDEN_PAGING__SLACK_TOKEN to the app's bot token (xoxb-…)",
    "invalid_auth": "MLWARDEN_PAGING__SLACK_TOKEN is not a valid token for this workspace",
    "account_inactive": "the Slack token belongs to a deleted user or app; install the app again",
    "token_revoked": "the Slack token was revoked; install the app again and update the token",
    "missing_scope": "give the Slack app the chat:write scope and reinstall it",
    "channel_not_found": "check MLWARDEN_PAGING__SLACK_CHANNEL (a channel id such as C0123…)",
    "not_in_channel": "invite the Slack app to the channel (/invite @app)",
    "is_archived": "the Slack channel is archived; configure another one",
    "message_not_found": "the paged message was deleted; nothing left to update",
    "invalid_blocks": "mlwarden built a message Slack refuses: please report this as a bug",
}


def _mrkdwn(text: str) -> str:
    """Escape untrusted text for Slack mrkdwn: `<!channel>` or `<url|x>` stay literal text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def status_line(update: PageUpdate | None) -> str:
    """The parent message's status: firing (with the alert count), acknowledged or resolved."""
    if update is None:
        return ":rotating_light: *Firing*"
    if update.change is IncidentChange.RESOLVED:
        return f":white_check_mark: *Resolved* · {update.alert_count} alert(s)"
    latest = update.latest.detected_at
    when = f" · latest {latest.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if latest else ""
    state = "Acknowledged" if update.change is IncidentChange.ACKNOWLEDGED else "Firing"
    icon = ":eyes:" if state == "Acknowledged" else ":rotating_light:"
    return f"{icon} *{state}* · {update.alert_count} alert(s){when}"


def page_blocks(page: Page, *, status: str, buttons: bool = True) -> list[dict[str, Any]]:
    """The Block Kit message of a page: what fired, on what, how badly, and where to look."""
    client = _mrkdwn(page.client_id) if page.client_id is not None else "— (model-wide)"
    header = f"{page.severity.value.upper()} · {page.kind.value} on {page.model_id}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(header, 150)}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(f"{_EMOJI[page.severity]} {_mrkdwn(page.summary)}", 3000),
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(text, 2000)}
                for text in (
                    f"*Model*\n{_mrkdwn(page.model_id)} v{_mrkdwn(page.model_version)}",
                    f"*Client*\n{client}",
                    f"*Score*\n{_number(page.score)} (threshold {_number(page.threshold)})",
                    f"*Detector*\n{_mrkdwn(page.detector)}",
                    f"*Playbook*\n{_mrkdwn(page.playbook)}",
                    f"*Incident*\n{_mrkdwn(page.incident_id)}",
                )
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(status, 3000)}]},
    ]
    if page.evidence_url is not None and len(page.evidence_url) <= 3000:
        blocks.append(
            {
                "type": "actions",
                "block_id": "mlwarden.links",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "mlwarden.evidence",
                        "text": {"type": "plain_text", "text": "Evidence in Kibana"},
                        "url": page.evidence_url,
                    }
                ],
            }
        )
    if buttons and page.approval_step is not None:
        blocks.append(approval_actions(page.incident_id, page.approval_step))
    return blocks


class SlackPager:
    """Pages and notifies a Slack channel, and keeps the message current as the incident moves.

    `token` is the app's bot token (chat:write); `channel` receives pages, `notify_channel`
    the notify step's messages (default: `channel`). `mention` (e.g. `<!here>` or
    `<!subteam^S0123>`) is put in front of pages only, so that a page notifies someone.
    """

    def __init__(
        self,
        token: SecretStr,
        channel: str,
        *,
        notify_channel: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        mention: str | None = None,
        rate_limit_retries: int = 1,
        remember: int = 10_000,
    ) -> None:
        self._client = AsyncWebClient(
            token=token.get_secret_value(),
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)],
        )
        self.channel = channel
        self.notify_channel = notify_channel or channel
        self._mention = mention
        self._remember = remember
        self._posted: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def page(
        self, page: Page, idempotency_key: str, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Post the page (once per key in this process); the result holds channel and ts."""
        return await self._post_once(
            page, idempotency_key, self.channel, mention=self._mention, timeout_s=timeout_s
        )

    async def notify(
        self,
        page: Page,
        idempotency_key: str,
        *,
        channel: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The same message in the notify channel (or `channel`), without the mention."""
        target = channel or self.notify_channel
        return await self._post_once(
            page, idempotency_key, target, mention=None, timeout_s=timeout_s
        )

    async def follow_up(
        self,
        update: PageUpdate,
        earlier: dict[str, Any],
        idempotency_key: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Update the parent's status, then reply in its thread (repeat and resolution)."""
        channel, ts = earlier.get("channel"), earlier.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            return {"skipped": "no Slack message was recorded for this page"}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        resolved = update.change is IncidentChange.RESOLVED
        blocks = page_blocks(update.page, status=status_line(update), buttons=not resolved)
        await self._call(
            "chat.update",
            self._client.chat_update(
                channel=channel, ts=ts, text=format_page(update.page), blocks=blocks
            ),
            deadline,
        )
        result: dict[str, Any] = {"channel": channel, "ts": ts, "status": update.change.value}
        reply = _thread_reply(update)
        if reply is not None:
            response = await self._call(
                "chat.postMessage",
                self._client.chat_postMessage(channel=channel, thread_ts=ts, text=reply),
                deadline,
            )
            result["reply_ts"] = response["ts"]
        return result

    async def _post_once(
        self,
        page: Page,
        key: str,
        channel: str,
        *,
        mention: str | None,
        timeout_s: float | None,
    ) -> dict[str, Any]:
        if key in self._posted:
            self._posted.move_to_end(key)
            return dict(self._posted[key])
        text = format_page(page)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        response = await self._call(
            "chat.postMessage",
            self._client.chat_postMessage(
                channel=channel,
                text=f"{mention} {text}" if mention else text,
                blocks=page_blocks(page, status=status_line(None)),
                unfurl_links=False,
                metadata={
                    "event_type": "mlwarden_page",
                    "event_payload": {"incident_id": page.incident_id, "idempotency_key": key},
                },
            ),
            deadline,
        )
        result = {"channel": response["channel"], "ts": response["ts"]}
        self._posted[key] = result
        while len(self._posted) > self._remember:
            self._posted.popitem(last=False)
        return dict(result)

    async def _call(
        self, method: str, call: Awaitable[AsyncSlackResponse], deadline: float | None
    ) -> AsyncSlackResponse:
        """Await one Web API call within the deadline; map every failure to ResponderError."""
        timeout_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except SlackApiError as exc:
            raise _api_error(method, exc) from exc
        except TimeoutError as exc:
            raise ResponderError(
                f"Slack {method} did not answer within {timeout_s:.1f}s; will retry",
                retryable=True,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ResponderError(
                f"Slack {method} could not be reached ({type(exc).__name__}: {exc}); will retry",
                retryable=True,
            ) from exc
        except SlackClientError as exc:
            raise ResponderError(
                f"Slack {method} refused the request: {exc}", retryable=False
            ) from exc


def _thread_reply(update: PageUpdate) -> str | None:
    if update.change is IncidentChange.REPEAT:
        latest = update.latest
        return _cut(
            f"Alert #{update.alert_count}: {_mrkdwn(latest.summary)} "
            f"(score {_number(latest.score)}, threshold {_number(latest.threshold)})",
            3000,
        )
    if update.change is IncidentChange.RESOLVED:
        return f":white_check_mark: Resolved after {update.alert_count} alert(s)."
    return None


def _api_error(method: str, exc: SlackApiError) -> ResponderError:
    """Slack's `ok: false` (or an HTTP error) as a retryable or permanent ResponderError."""
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    headers = getattr(response, "headers", None) or {}
    retry_after = retry_after_seconds(headers.get("Retry-After") or headers.get("retry-after"))
    what = code or f"HTTP {status}"
    if status == 429 or code in _RETRYABLE_ERRORS or (isinstance(status, int) and status >= 500):
        return ResponderError(
            f"Slack {method} failed: {what}; will retry", retryable=True, retry_after_s=retry_after
        )
    hint = _HINTS.get(code or "", "see https://api.slack.com/methods for the error code")
    return ResponderError(f"Slack {method} failed: {what}: {hint}", retryable=False)
