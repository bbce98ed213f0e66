"""Human approvals from Slack: the Approve / Reject buttons and the decision they send back.

A step that waits for a human (`require_approval`, or a rollback gated by approval) is paged
with two buttons whose values name the incident and the step. When someone clicks, Slack POSTs
a signed `block_actions` payload to the worker's interactivity endpoint; `parse_approval`
checks the signature and its freshness with the app's signing secret (`slack_sdk`'s
`SignatureVerifier`: HMAC-SHA256 of `v0:<timestamp>:<body>`, at most 5 minutes old, so a
captured request cannot be replayed later) and returns the decision. It is a pure function:
the web view owns HTTP, the engine owns what a decision does (and who may make it).

The buttons and the parser live together so the value format has one owner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier

from mlwarden.schemas.errors import MlwardenError

APPROVAL_BLOCK_ID: Final = "mlwarden.approval"
APPROVE_ACTION_ID: Final = "mlwarden.approve"
REJECT_ACTION_ID: Final = "mlwarden.reject"
_DECISIONS: Final[dict[str, Literal["approve", "reject"]]] = {
    APPROVE_ACTION_ID: "approve",
    REJECT_ACTION_ID: "reject",
}
MAX_REQUEST_AGE_S: Final = 300
"""Slack's advice and `SignatureVerifier`'s window: older requests may be replays."""


class SlackRequestError(MlwardenError):
    """A request to the interactivity endpoint that must be refused.

    `http_status` is what the endpoint should answer: 401 for a bad or stale signature (Slack
    did not send it, or it is a replay), 400 for a signed but malformed payload.
    """

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class ApprovalDecision(BaseModel):
    """A human's answer to an approval request, as clicked in Slack."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str
    step: str
    decision: Literal["approve", "reject"]
    user_id: str
    user_name: str | None = None
    channel: str | None = None
    message_ts: str | None = None
    """The Slack message that held the buttons (to update it with the outcome)."""


class _ButtonValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    incident_id: str
    step: str


def approval_actions(incident_id: str, step: str) -> dict[str, Any]:
    """The Block Kit `actions` block with Approve / Reject buttons for `step` of the incident."""
    value = json.dumps({"incident_id": incident_id, "step": step}, separators=(",", ":"))
    if len(value) > 2000:  # Block Kit's limit on a button value
        raise ValueError("incident id and step name are too long for a Slack button value")
    return {
        "type": "actions",
        "block_id": APPROVAL_BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION_ID,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": value,
            },
            {
                "type": "button",
                "action_id": REJECT_ACTION_ID,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": value,
            },
        ],
    }


class _FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def parse_approval(
    body: bytes,
    headers: Mapping[str, str],
    signing_secret: SecretStr,
    *,
    now: float | None = None,
) -> ApprovalDecision | None:
    """Verify a Slack interactivity request and return the approval decision it carries.

    `body` is the raw request body (the signature covers its exact bytes, so parse nothing
    before calling this) and `headers` the request headers. Returns None for a genuine
    request that is not an mlwarden approval click (another button of the app): answer 200
    and ignore it. Raises `SlackRequestError` otherwise. `now` (epoch seconds) is for tests.
    """
    verifier = SignatureVerifier(
        signing_secret.get_secret_value(),
        clock=_FixedClock(now if now is not None else time.time()),
    )
    lowered = {key.lower(): value for key, value in headers.items()}
    timestamp = lowered.get("x-slack-request-timestamp")
    if timestamp is None or lowered.get("x-slack-signature") is None:
        raise SlackRequestError(
            "not signed by Slack: X-Slack-Signature and X-Slack-Request-Timestamp are required",
            http_status=401,
        )
    if not timestamp.isdigit():
        raise SlackRequestError("X-Slack-Request-Timestamp is not a number", http_status=401)
    if not verifier.is_valid_request(body, lowered):
        age = abs(verifier.clock.now() - int(timestamp))
        problem = (
            f"is {age:.0f}s old (more than {MAX_REQUEST_AGE_S}s: a replay, or this host's clock "
            "is off)"
            if age > MAX_REQUEST_AGE_S
            else "has a wrong signature (check MLWARDEN_PAGING__SLACK_SIGNING_SECRET)"
        )
        raise SlackRequestError(f"the Slack request {problem}", http_status=401)
    return _decision_from(_payload_of(body))


def _payload_of(body: bytes) -> dict[str, Any]:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        [raw] = form["payload"]
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise SlackRequestError(
            "expected a form body with one `payload` field holding JSON (Slack interactivity)",
            http_status=400,
        ) from exc
    if not isinstance(payload, dict):
        raise SlackRequestError("the Slack payload is not a JSON object", http_status=400)
    return payload


def _decision_from(payload: dict[str, Any]) -> ApprovalDecision | None:
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    ours = [a for a in actions or [] if isinstance(a, dict) and a.get("action_id") in _DECISIONS]
    if not ours:
        return None
    action = ours[0]
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise SlackRequestError("the block_actions payload names no user", http_status=400)
    try:
        value = _ButtonValue.model_validate_json(str(action.get("value", "")))
    except ValidationError as exc:
        raise SlackRequestError(
            "the approval button's value is not an mlwarden approval request", http_status=400
        ) from exc
    channel = payload.get("channel")
    container = payload.get("container")
    return ApprovalDecision(
        incident_id=value.incident_id,
        step=value.step,
        decision=_DECISIONS[action["action_id"]],
        user_id=user["id"],
        user_name=user.get("username") or user.get("name"),
        channel=channel.get("id") if isinstance(channel, dict) else None,
        message_ts=container.get("message_ts") if isinstance(container, dict) else None,
    )
