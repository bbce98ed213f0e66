"""PagerDuty pager: Events API v2 (`POST {url}/v2/enqueue`) over httpx.

The page step's idempotency key is the event's `dedup_key` (hashed when longer than the 255
characters PagerDuty allows) and is stored in the result, so acknowledge and resolve reach the
same PagerDuty alert, and a trigger sent twice (a retry, a restart) stays one alert: PagerDuty
dedups on its side, which closes the window Slack leaves open.

Responses, as PagerDuty documents them: 202 accepted; 400 invalid event (permanent, the
`errors` list says why); 429 and 5xx retryable (with Retry-After when given); network errors
and timeouts retryable. The routing key is a `SecretStr`: it goes only into the request body,
never into logs, results or error messages.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import httpx
from pydantic import SecretStr

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.page import Page, PageUpdate, retry_after_seconds
from mlwarden.schemas.alert import Severity
from mlwarden.schemas.errors import ResponderError

DEFAULT_URL: Final = "https://events.pagerduty.com"
MAX_DEDUP_KEY: Final = 255
MAX_SUMMARY: Final = 1024
DEFAULT_TIMEOUT_S: Final = 10.0
_SEVERITY: Final = {
    Severity.CRITICAL: "critical",
    Severity.WARNING: "warning",
    Severity.INFO: "info",
}

EventAction = Literal["trigger", "acknowledge", "resolve"]


def dedup_key_for(idempotency_key: str) -> str:
    """The step's key as a PagerDuty `dedup_key`: as is, or hashed when over 255 characters."""
    if len(idempotency_key) <= MAX_DEDUP_KEY:
        return idempotency_key
    return "mlwarden:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def trigger_event(page: Page, dedup_key: str, *, source: str | None = None) -> dict[str, Any]:
    """The trigger event of a page, without the routing key (added when sending)."""
    summary = page.summary if len(page.summary) <= MAX_SUMMARY else page.summary[:1023] + "…"
    details: dict[str, Any] = {
        "incident_id": page.incident_id,
        "alert_id": page.alert_id,
        "model_id": page.model_id,
        "model_version": page.model_version,
        "client_id": page.client_id,
        "score": page.score,
        "threshold": page.threshold,
        "playbook": page.playbook,
    }
    if page.approval_step is not None:
        details["approval"] = (
            f"step {page.approval_step!r} waits for a decision: "
            f"mlwarden incidents approve {page.incident_id} (or reject)"
        )
    payload: dict[str, Any] = {
        "summary": summary,
        "source": source or f"model:{page.model_id}",
        "severity": _SEVERITY[page.severity],
        "component": f"{page.model_id}@{page.model_version}",
        "group": page.playbook,
        "class": f"{page.kind.value}/{page.detector}",
        "custom_details": details,
    }
    if page.detected_at is not None:
        payload["timestamp"] = page.detected_at.isoformat()
    event: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
        "client": "mlwarden",
    }
    if page.evidence_url is not None:
        event["links"] = [{"href": page.evidence_url, "text": "Evidence in Kibana"}]
    return event


class PagerDutyPager:
    """Triggers, acknowledges and resolves PagerDuty alerts for pages.

    `routing_key` is the 32-character integration key of an Events API v2 integration;
    `url` the Events API base (`https://events.pagerduty.com`, or an EU/proxy endpoint);
    `source` overrides the event's source (default `model:<model_id>`). Close with `aclose`.
    """

    def __init__(
        self,
        routing_key: SecretStr,
        *,
        url: str = DEFAULT_URL,
        source: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._routing_key = routing_key
        self._endpoint = url.rstrip("/") + "/v2/enqueue"
        self._source = source
        self._client = client or httpx.AsyncClient()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def page(
        self, page: Page, idempotency_key: str, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Trigger (or re-trigger: PagerDuty dedups) the alert of this page."""
        dedup_key = dedup_key_for(idempotency_key)
        event = trigger_event(page, dedup_key, source=self._source)
        return await self._send(event, timeout_s)

    async def follow_up(
        self,
        update: PageUpdate,
        earlier: dict[str, Any],
        idempotency_key: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Acknowledge or resolve with the recorded `dedup_key`; repeats need nothing.

        A repeat is left to the Slack thread: PagerDuty already has an open alert for the
        incident, and another trigger would only add a log entry (or, after someone resolved
        it in PagerDuty, open a new one that mlwarden did not ask for).
        """
        dedup_key = earlier.get("dedup_key")
        if not isinstance(dedup_key, str):
            return {"skipped": "no PagerDuty dedup_key was recorded for this page"}
        if update.change is IncidentChange.REPEAT:
            return {"dedup_key": dedup_key, "skipped": "repeat"}
        action: EventAction = (
            "resolve" if update.change is IncidentChange.RESOLVED else "acknowledge"
        )
        return await self._send({"event_action": action, "dedup_key": dedup_key}, timeout_s)

    async def _send(self, event: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
        action = event["event_action"]
        body = {"routing_key": self._routing_key.get_secret_value(), **event}
        timeout = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        try:
            response = await self._client.post(
                self._endpoint, json=body, timeout=httpx.Timeout(max(timeout, 0.001))
            )
        except httpx.TimeoutException as exc:
            raise ResponderError(
                f"PagerDuty {action} did not answer within {timeout:.1f}s; will retry",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise ResponderError(
                f"PagerDuty could not be reached at {self._endpoint} "
                f"({type(exc).__name__}); will retry",
                retryable=True,
            ) from exc
        if response.is_success:
            return {"dedup_key": _answer(response).get("dedup_key") or event["dedup_key"],
                    "event_action": action}  # fmt: skip
        raise self._error(action, response)

    def _error(self, action: str, response: httpx.Response) -> ResponderError:
        status = response.status_code
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429 or status >= 500:
            return ResponderError(
                f"PagerDuty {action} answered HTTP {status}; will retry",
                retryable=True,
                retry_after_s=retry_after,
            )
        answer = _answer(response)
        errors = answer.get("errors")
        why = "; ".join(map(str, errors)) if isinstance(errors, list) and errors else None
        why = why or str(answer.get("message") or response.reason_phrase)
        secret = self._routing_key.get_secret_value()
        why = why.replace(secret, "**********") if secret else why
        hint = (
            "check MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY (the 32-character integration key)"
            if status == 400
            else f"check MLWARDEN_PAGING__PAGERDUTY_URL ({self._endpoint})"
        )
        return ResponderError(
            f"PagerDuty refused the {action} event (HTTP {status}: {why}); {hint}",
            retryable=False,
        )


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
