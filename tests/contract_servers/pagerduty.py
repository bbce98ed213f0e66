"""PagerDuty Events API v2 contract server: `POST /v2/enqueue`, as documented.

Enforced (developer.pagerduty.com, Events API v2 "Send an Alert Event" and "Overview"):
- `Content-Type: application/json`, a JSON object, at most 512 KB;
- `routing_key`: 32 characters; `event_action`: trigger | acknowledge | resolve;
- `dedup_key` ≤ 255 characters; generated when a trigger has none; required otherwise;
- trigger `payload`: `summary` (≤ 1024), `source`, `severity` (critical | error | warning |
  info) required; `timestamp` ISO 8601, `custom_details` an object; `links[].href`,
  `images[].src` required;
- 202 `{"status": "success", "message": "Event processed", "dedup_key": …}`;
  400 `{"status": "invalid event", "message": "Event object is invalid", "errors": […]}`;
- `fail_next(n, status=429|500, retry_after=…)` for throttling and outages.
Alerts are tracked per (routing_key, dedup_key), as PagerDuty dedups: a trigger on an open
alert adds to it, acknowledge and resolve apply to the open alert (or are dropped), and a
trigger after a resolve opens a new alert.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.contract_servers._http import ContractServer, Reply, Request

ROUTING_KEY = "R0UTINGKEY0123456789abcdefABCDEF"
MAX_BODY = 512 * 1024
_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITIES = ("critical", "error", "warning", "info")


@dataclass
class Incident:
    """One PagerDuty alert: its state and every event applied to it."""

    routing_key: str
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    events: list[dict[str, Any]] = field(default_factory=list)


class PagerDutyContractServer(ContractServer):
    def __init__(self) -> None:
        super().__init__()
        self.incidents: list[Incident] = []
        self.dropped: list[dict[str, Any]] = []

    @property
    def events_url(self) -> str:
        """What `PagerDutyPager(url=…)` takes (the pager appends /v2/enqueue)."""
        return self.url

    def clear(self) -> None:
        self.incidents.clear()
        self.dropped.clear()

    def by_dedup_key(self, dedup_key: str) -> list[Incident]:
        with self.lock:
            return [i for i in self.incidents if i.dedup_key == dedup_key]

    def failure_reply(self, status: int, retry_after: str | None) -> Reply:
        if status == 429:
            return Reply(429, {"status": "throttle event", "message": "Too many requests"})
        return Reply(status, {"status": "error", "message": "Internal Server Error"})

    def handle(self, request: Request) -> Reply:
        if request.path.split("?")[0] != "/v2/enqueue":
            return Reply(404, {"status": "not found"})
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return _invalid("Content-Type must be application/json")
        if len(request.body) > MAX_BODY:
            return _invalid("Event payload exceeds 512 KB")
        try:
            event = json.loads(request.body)
        except ValueError:
            return _invalid("Event object is not valid JSON")
        if not isinstance(event, dict):
            return _invalid("Event object must be a JSON object")
        errors = _problems(event)
        if errors:
            return _invalid(*errors)
        return self._apply(event)

    def _apply(self, event: dict[str, Any]) -> Reply:
        action = event["event_action"]
        routing_key = event["routing_key"]
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        open_ = [
            i
            for i in self.incidents
            if i.routing_key == routing_key and i.dedup_key == dedup_key and i.status != "resolved"
        ]
        if action == "trigger":
            if open_:
                open_[0].events.append(event)
            else:
                self.incidents.append(Incident(routing_key, dedup_key, "triggered", [event]))
        elif open_:
            open_[0].status = "acknowledged" if action == "acknowledge" else "resolved"
            open_[0].events.append(event)
        else:
            self.dropped.append(event)
        body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        return Reply(202, body)


def _invalid(*errors: str) -> Reply:
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}
    return Reply(400, body)


def _problems(event: dict[str, Any]) -> list[str]:
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' must be a 32 character integration key")
    action = event.get("event_action")
    if action not in _ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(_ACTIONS)}")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is required for acknowledge and resolve events")
    if action == "trigger":
        errors.extend(_payload_problems(event.get("payload")))
    for link in event.get("links") or []:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            errors.append("'links[].href' is required")
    for image in event.get("images") or []:
        if not isinstance(image, dict) or not isinstance(image.get("src"), str):
            errors.append("'images[].src' is required")
    return errors


def _payload_problems(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is missing or not an object"]
    errors = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' must be at most 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in _SEVERITIES:
        errors.append(f"'payload.severity' must be one of {', '.join(_SEVERITIES)}")
    timestamp = payload.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(str(timestamp))
        except ValueError:
            errors.append("'payload.timestamp' must be an ISO 8601 timestamp")
    details = payload.get("custom_details")
    if details is not None and not isinstance(details, dict):
        errors.append("'payload.custom_details' must be an object")
    return errors
