"""Slack Web API contract server: `chat.postMessage` and `chat.update`, as documented.

Enforced (https://api.slack.com/methods/chat.postMessage, …/chat.update, web API basics):
- every call needs a token, `Authorization: Bearer xoxb-…` or a `token` form field:
  none → `not_authed`, unknown → `invalid_auth` (HTTP 200, `ok: false`, as Slack answers);
- bodies are `application/json` or `application/x-www-form-urlencoded` (form fields `blocks`
  and `metadata` hold JSON strings); anything else → `invalid_form_data`;
- `chat.postMessage` needs a known `channel` (`channel_not_found`) and `text` or `blocks`
  (`no_text`); answers `ok`, `channel` (the id), `ts`, `message`;
- `chat.update` needs `channel` + `ts` of an existing message (`message_not_found`);
- Block Kit limits that real Slack refuses with `invalid_blocks`: block types, header ≤ 150,
  section text ≤ 3000, ≤ 10 fields of ≤ 2000, buttons (text ≤ 75, value ≤ 2000, url ≤ 3000,
  action_id ≤ 255 and unique), block_id ≤ 255 and unique;
- `metadata` needs `event_type` and `event_payload` (`invalid_metadata_format`);
- `fail_next(n, status=429, retry_after=…)`: HTTP 429 with Retry-After and
  `{"ok": false, "error": "ratelimited"}`, or a 5xx with `internal_error`.
Messages are recorded (with their thread and update history) for assertions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.contract_servers._http import ContractServer, Reply, Request

VALID_TOKEN = "xoxb-1234-5678-mlwarden-test"
CHANNELS = {"C0PAGES": "pages", "C0TICKETS": "tickets"}
_BLOCK_TYPES = {"section", "header", "context", "actions", "divider", "image", "rich_text"}
_JSON_FIELDS = ("blocks", "metadata", "attachments")


@dataclass
class Message:
    """A message as the channel shows it, with what happened to it."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None
    updates: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class BlockError(ValueError):
    """A Block Kit violation; the message is what Slack lists in response_metadata."""


class SlackContractServer(ContractServer):
    def __init__(self, tokens: frozenset[str] = frozenset({VALID_TOKEN})) -> None:
        super().__init__()
        self.tokens = tokens
        self.messages: list[Message] = []
        self._clock = 0

    @property
    def base_url(self) -> str:
        """What `AsyncWebClient(base_url=…)` takes."""
        return f"{self.url}/api/"

    def clear(self) -> None:
        self.messages.clear()

    def message(self, channel: str, ts: str) -> Message:
        with self.lock:
            return next(m for m in self.messages if m.channel == channel and m.ts == ts)

    def thread(self, channel: str, ts: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.channel == channel and m.thread_ts == ts]

    def top_level(self, channel: str | None = None) -> list[Message]:
        with self.lock:
            return [
                m
                for m in self.messages
                if m.thread_ts is None and (channel is None or m.channel == channel)
            ]

    def failure_reply(self, status: int, retry_after: str | None) -> Reply:
        error = "ratelimited" if status == 429 else "internal_error"
        return Reply(status, {"ok": False, "error": error})

    def handle(self, request: Request) -> Reply:
        method = request.path.removeprefix("/api/").split("?")[0]
        if method not in ("chat.postMessage", "chat.update"):
            return Reply(404, {"ok": False, "error": "unknown_method"})
        try:
            args = _arguments(request)
        except ValueError:
            return _error("invalid_form_data")
        token = _bearer(request.headers.get("authorization")) or args.get("token")
        if not token:
            return _error("not_authed")
        if token not in self.tokens:
            return _error("invalid_auth")
        channel = _channel_id(args.get("channel"))
        if channel is None:
            return _error("channel_not_found")
        if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
            return _error("no_text")
        try:
            _check_blocks(args.get("blocks"))
        except BlockError as exc:
            return _error("invalid_blocks", messages=[str(exc)])
        metadata = args.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return _error("invalid_metadata_format")
        if method == "chat.postMessage":
            return self._post(channel, args)
        return self._update(channel, args)

    def _post(self, channel: str, args: dict[str, Any]) -> Reply:
        self._clock += 1
        ts = f"{1_700_000_000 + self._clock}.{self._clock:06d}"
        message = Message(
            channel=channel,
            ts=ts,
            text=args.get("text"),
            blocks=args.get("blocks"),
            thread_ts=args.get("thread_ts"),
            metadata=args.get("metadata"),
        )
        self.messages.append(message)
        shown: dict[str, Any] = {"type": "message", "ts": ts, "text": message.text or ""}
        if message.thread_ts:
            shown["thread_ts"] = message.thread_ts
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": shown})

    def _update(self, channel: str, args: dict[str, Any]) -> Reply:
        ts = args.get("ts")
        found = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not ts or not found:
            return _error("message_not_found")
        [message] = found
        message.history.append({"text": message.text, "blocks": message.blocks})
        message.text = args.get("text", message.text)
        message.blocks = args.get("blocks", message.blocks)
        message.updates += 1
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "text": message.text})


def _error(code: str, *, messages: list[str] | None = None) -> Reply:
    body: dict[str, Any] = {"ok": False, "error": code}
    if messages:
        body["response_metadata"] = {"messages": messages}
    return Reply(200, body)


def _bearer(header: str | None) -> str | None:
    if header and header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip() or None
    return None


def _arguments(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json":
        args = json.loads(request.body or b"{}")
        if not isinstance(args, dict):
            raise ValueError("not an object")
        return args
    if content_type == "application/x-www-form-urlencoded":
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        parsed: dict[str, Any] = dict(form)
        for name in _JSON_FIELDS:
            if name in form:
                parsed[name] = json.loads(form[name])
        return parsed
    raise ValueError(f"unsupported content type {content_type!r}")


def _channel_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if value in CHANNELS:
        return value
    name = value.removeprefix("#")
    return next((cid for cid, known in CHANNELS.items() if known == name), None)


def _check_text(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> None:
    kinds = {"plain_text"} if plain_only else {"plain_text", "mrkdwn"}
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        raise BlockError(f"{where}: must be a text object of type {sorted(kinds)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise BlockError(f"{where}.text: must be a non-empty string")
    if len(text) > limit:
        raise BlockError(f"{where}.text: must be at most {limit} characters")


def _check_blocks(blocks: Any) -> None:
    if blocks is None:
        return
    if not isinstance(blocks, list) or len(blocks) > 50:
        raise BlockError("blocks: must be a list of at most 50 blocks")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            raise BlockError(f"{where}: unknown block type")
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or len(block_id) > 255 or block_id in block_ids:
                raise BlockError(f"{where}.block_id: must be unique and at most 255 characters")
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            _check_text(block.get("text"), where, 150, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                raise BlockError(f"{where}: a section needs text or fields")
            if "text" in block:
                _check_text(block["text"], f"{where}.text", 3000)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                raise BlockError(f"{where}.fields: at most 10")
            for j, item in enumerate(fields):
                _check_text(item, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise BlockError(f"{where}.elements: 1 to 10 elements")
            for j, item in enumerate(elements):
                _check_text(item, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise BlockError(f"{where}.elements: 1 to 25 elements")
            for j, item in enumerate(elements):
                _check_button(item, f"{where}.elements[{j}]", action_ids)


def _check_button(item: Any, where: str, action_ids: set[str]) -> None:
    if not isinstance(item, dict) or item.get("type") != "button":
        raise BlockError(f"{where}: only buttons are checked here")
    _check_text(item.get("text"), f"{where}.text", 75, plain_only=True)
    action_id = item.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or len(action_id) > 255 or action_id in action_ids:
            raise BlockError(f"{where}.action_id: must be unique and at most 255 characters")
        action_ids.add(action_id)
    if len(str(item.get("value", ""))) > 2000:
        raise BlockError(f"{where}.value: at most 2000 characters")
    if len(str(item.get("url", ""))) > 3000:
        raise BlockError(f"{where}.url: at most 3000 characters")
    if item.get("style") not in (None, "primary", "danger"):
        raise BlockError(f"{where}.style: primary or danger")
