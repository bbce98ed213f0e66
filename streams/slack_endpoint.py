"""Slack's interactivity endpoint: an Approve / Reject click becomes an engine command.

Slack POSTs a signed `block_actions` payload when someone clicks a button of an approval
page (`responders/slack_approvals.py` owns the buttons and the signature check). The click
is turned into an `ApproveCommand` / `RejectCommand` on `mlwarden.commands`, the same path as
`mlwarden incidents approve`, so the engine alone decides what an approval does. Slack retries
a request it got no answer to within 3 s; the command id is derived from the click, so a
retried delivery is applied once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from mlwarden.responders.slack_approvals import ApprovalDecision, SlackRequestError, parse_approval
from mlwarden.schemas.incident import ApproveCommand, RejectCommand

SendCommand = Callable[[bytes, bytes], Awaitable[None]]
"""Publish (key, JSON value) to `mlwarden.commands`."""


def approval_command(
    decision: ApprovalDecision, issued_at: datetime
) -> ApproveCommand | RejectCommand:
    """The engine command for one click; its id is stable across Slack's retries."""
    click = "|".join(
        (decision.incident_id, decision.step, decision.user_id, decision.message_ts or "")
    )
    fields: dict[str, Any] = {
        "command_id": "slack-" + hashlib.sha256(click.encode()).hexdigest()[:32],
        "issued_at": issued_at,
        "by": f"slack:{decision.user_name or decision.user_id}",
        "incident_id": decision.incident_id,
        "step_key": decision.step,
        "comment": f"clicked in Slack by {decision.user_id}",
    }
    if decision.decision == "approve":
        return ApproveCommand(**fields)
    return RejectCommand(**fields)


async def handle_slack_action(
    body: bytes,
    headers: Mapping[str, str],
    signing_secret: SecretStr,
    send: SendCommand,
    clock: Callable[[], datetime],
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for one request to the endpoint; publishes the command."""
    try:
        decision = parse_approval(body, headers, signing_secret)
    except SlackRequestError as exc:
        return exc.http_status, {"ok": False, "error": str(exc)}
    if decision is None:  # a click on some other button of ours: nothing to decide
        return 200, {"ok": True}
    command = approval_command(decision, clock())
    await send(command.incident_id.encode(), command.model_dump_json().encode())
    return 200, {"ok": True, "command_id": command.command_id}
