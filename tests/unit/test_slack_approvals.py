"""Approve / Reject clicks from Slack: only genuine, fresh requests become decisions."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from mlwarden.responders.slack_approvals import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    ApprovalDecision,
    SlackRequestError,
    approval_actions,
    parse_approval,
)

SECRET = SecretStr("8f742231b10e8888abcd99yyyzzz85a5")
NOW = 1_795_437_900


def click(action_id: str = APPROVE_ACTION_ID, **changes: Any) -> dict[str, Any]:
    """The block_actions payload Slack sends when the button of `approval_actions` is clicked."""
    [button] = [
        b for b in approval_actions("fp-1", "rollback")["elements"] if b["action_id"] == action_id
    ]
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL", "username": "ana"},
        "channel": {"id": "C0PAGES", "name": "pages"},
        "container": {"type": "message", "message_ts": "1700000001.000001"},
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "mlwarden.approval",
                "value": button["value"],
                "action_ts": "1700000100.000200",
            }
        ],
    }
    return payload | changes


def signed(payload: dict[str, Any], *, at: int = NOW, secret: str = SECRET.get_secret_value()):
    body = urlencode({"payload": json.dumps(payload)}).encode()
    base = f"v0:{at}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": str(at), "X-Slack-Signature": signature}


def test_a_signed_approve_click_becomes_a_decision() -> None:
    body, headers = signed(click())
    assert parse_approval(body, headers, SECRET, now=NOW + 10) == ApprovalDecision(
        incident_id="fp-1",
        step="rollback",
        decision="approve",
        user_id="U0ONCALL",
        user_name="ana",
        channel="C0PAGES",
        message_ts="1700000001.000001",
    )


def test_reject_is_a_decision_too() -> None:
    body, headers = signed(click(REJECT_ACTION_ID))
    decision = parse_approval(body, headers, SECRET, now=NOW)
    assert decision is not None
    assert decision.decision == "reject"


def test_a_wrong_signature_is_refused_with_401() -> None:
    body, headers = signed(click(), secret="another-apps-secret")
    with pytest.raises(SlackRequestError, match="wrong signature") as caught:
        parse_approval(body, headers, SECRET, now=NOW)
    assert caught.value.http_status == 401


def test_a_tampered_body_is_refused() -> None:
    body, headers = signed(click())
    forged = body.replace(b"rollback", b"rollbacl")
    with pytest.raises(SlackRequestError):
        parse_approval(forged, headers, SECRET, now=NOW)


def test_a_stale_request_is_refused_as_a_possible_replay() -> None:
    body, headers = signed(click(), at=NOW - 301)
    with pytest.raises(SlackRequestError, match="301s old") as caught:
        parse_approval(body, headers, SECRET, now=NOW)
    assert caught.value.http_status == 401
    assert parse_approval(*signed(click(), at=NOW - 299), SECRET, now=NOW) is not None


def test_unsigned_requests_are_refused() -> None:
    body, _ = signed(click())
    with pytest.raises(SlackRequestError, match="X-Slack-Signature"):
        parse_approval(body, {}, SECRET, now=NOW)


def test_a_click_on_another_button_is_not_a_decision() -> None:
    other = click()
    other["actions"][0]["action_id"] = "mlwarden.evidence"
    assert parse_approval(*signed(other), SECRET, now=NOW) is None
    assert parse_approval(*signed({"type": "view_submission"}), SECRET, now=NOW) is None


def test_a_signed_but_malformed_payload_is_a_400() -> None:
    bad_value = click()
    bad_value["actions"][0]["value"] = "not json"
    with pytest.raises(SlackRequestError) as caught:
        parse_approval(*signed(bad_value), SECRET, now=NOW)
    assert caught.value.http_status == 400
    body = b"payload=%7Bnot-json"
    headers = signed({})[1]
    base = f"v0:{NOW}:".encode() + body
    headers["X-Slack-Signature"] = (
        "v0=" + hmac.new(SECRET.get_secret_value().encode(), base, hashlib.sha256).hexdigest()
    )
    with pytest.raises(SlackRequestError) as caught:
        parse_approval(body, headers, SECRET, now=NOW)
    assert caught.value.http_status == 400
