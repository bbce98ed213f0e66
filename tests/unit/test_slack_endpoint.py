"""The worker's Slack endpoint: a genuine click becomes one engine command, a forgery nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from mlwarden.responders.slack_approvals import REJECT_ACTION_ID
from mlwarden.schemas.incident import ApproveCommand, EngineCommand, RejectCommand
from mlwarden.streams.slack_endpoint import handle_slack_action
from tests.unit.test_slack_approvals import SECRET, click, signed

ISSUED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Commands:
    """What the endpoint published to `mlwarden.commands`, decoded as the worker will."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, ApproveCommand | RejectCommand]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        command = EngineCommand.model_validate_json(value).root
        assert isinstance(command, ApproveCommand | RejectCommand)
        self.sent.append((key, command))


async def test_an_approve_click_is_published_as_an_approve_command() -> None:
    commands = Commands()
    body, headers = signed(click(), at=int(time.time()))
    status, reply = await handle_slack_action(body, headers, SECRET, commands.send, lambda: ISSUED)
    assert status == 200
    [(key, command)] = commands.sent
    assert key == b"fp-1"
    assert isinstance(command, ApproveCommand)
    assert (command.incident_id, command.step_key, command.by) == ("fp-1", "rollback", "slack:ana")
    assert reply == {"ok": True, "command_id": command.command_id}


async def test_slack_retrying_the_same_click_gives_the_same_command_id() -> None:
    commands = Commands()
    body, headers = signed(click(), at=int(time.time()))
    for _ in range(2):
        await handle_slack_action(body, headers, SECRET, commands.send, lambda: ISSUED)
    first, second = (command for _, command in commands.sent)
    assert first.command_id == second.command_id  # the engine applies a command id once


async def test_a_reject_click_is_a_reject_command() -> None:
    commands = Commands()
    body, headers = signed(click(REJECT_ACTION_ID), at=int(time.time()))
    await handle_slack_action(body, headers, SECRET, commands.send, lambda: ISSUED)
    [(_, command)] = commands.sent
    assert isinstance(command, RejectCommand)


async def test_a_forged_click_is_refused_and_publishes_nothing() -> None:
    commands = Commands()
    body, headers = signed(click(), at=int(time.time()), secret="not-the-signing-secret")
    status, reply = await handle_slack_action(body, headers, SECRET, commands.send, lambda: ISSUED)
    assert status == 401
    assert reply["ok"] is False
    assert commands.sent == []
