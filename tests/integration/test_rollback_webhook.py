"""rollback_model through the signed webhook contract, against a real HTTP registry in the test.

`ContractRegistry` is what a team would put in front of SageMaker or Vertex: it speaks the JSON
contract of `mlwarden.responders.registry_webhook` and checks every request's signature with
the `verify_signature` helper that module ships for receivers, answering 401 when it fails.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import SecretStr

from mlwarden.responders.base import RetryPolicy, StepContext, call_with_retries
from mlwarden.responders.params import RollbackParams
from mlwarden.responders.registry_webhook import (
    SIGNATURE_HEADER,
    WebhookSignatureError,
    sign,
    verify_signature,
)
from mlwarden.responders.rollback import RegistrySettings, RollbackResponder
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ResponderError

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-0123456789"
PREFIX = "/registry/v1"
"""The contract sits under a path prefix, as it would behind a gateway."""


@dataclass
class Model:
    versions: dict[int, str]
    aliases: dict[str, int]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ContractRegistry:
    """In-memory registry state plus knobs a test turns: failures to inject, a stall."""

    url: str = ""
    models: dict[str, Model] = field(default_factory=dict)
    alias_posts: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    fail_next: dict[str, int] = field(default_factory=dict)
    """HTTP method -> status to answer its next request with, once."""
    stall: threading.Event | None = None
    """When set by a test, requests wait for it to be released (to outlast a client timeout)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, versions: int = 3, statuses: dict[int, str] | None = None) -> str:
        table = {n: (statuses or {}).get(n, "ready") for n in range(1, versions + 1)}
        self.models[name] = Model(versions=table, aliases={"champion": versions})
        return name


class _Handler(BaseHTTPRequestHandler):
    registry: ContractRegistry

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except ConnectionError:  # the client gave up (the timeout test): nobody to answer
            pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.registry
        try:
            verify_signature(
                SECRET, self.headers.get(SIGNATURE_HEADER), self.command, self.path, body
            )
        except WebhookSignatureError as exc:
            with state.lock:
                state.rejected += 1
            self._reply(401, {"error": str(exc)})
            return
        if state.stall is not None:
            state.stall.wait(timeout=30)
        with state.lock:
            status = state.fail_next.pop(self.command, None)
            if status is not None:
                self._reply(status, {"error": "injected"})
                return
            target = self.path.removeprefix(PREFIX)
            self._route(state, [unquote(part) for part in target.split("/")[1:]], body)

    def _route(self, state: ContractRegistry, parts: list[str], body: bytes) -> None:
        if len(parts) < 3 or parts[0] != "models" or parts[1] not in state.models:
            self._reply(404, {"error": "no such model"})
            return
        model = state.models[parts[1]]
        match (self.command, parts[2:]):
            case ("GET", ["versions"]):
                versions = [{"version": str(n), "status": s} for n, s in model.versions.items()]
                self._reply(200, {"versions": versions})
            case ("GET", ["aliases", alias]):
                self._reply(200, {"version": model.aliases.get(alias)})
            case ("POST", ["aliases", alias]):
                request = json.loads(body)
                state.alias_posts.append(request)
                model.aliases[alias] = int(request["version"])
                self._reply(204)
            case ("GET", ["records", record_id]):
                if record_id in model.records:
                    self._reply(200, {"record": model.records[record_id]})
                else:
                    self._reply(404, {"error": "no record"})
            case ("PUT", ["records", record_id]):
                model.records[record_id] = json.loads(body)["record"]
                self._reply(200, {})
            case _:
                self._reply(404, {"error": "no such route"})

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()


@pytest.fixture
def registry() -> Iterator[ContractRegistry]:
    state = ContractRegistry()
    handler = type("Handler", (_Handler,), {"registry": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.stall is not None:
            state.stall.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def responder(url: str, secret: str = SECRET, timeout_s: float = 10.0) -> RollbackResponder:
    settings = RegistrySettings(
        webhook_url=url, webhook_secret=SecretStr(secret), timeout_s=timeout_s
    )
    return RollbackResponder.from_settings(settings)


@pytest.fixture
async def rollback(registry: ContractRegistry) -> AsyncIterator[RollbackResponder]:
    async with responder(registry.url) as running:
        yield running


def context(model: str, key: str | None = None) -> StepContext:
    now = datetime.now(UTC)
    alert = Alert(
        alert_id=uuid.uuid4().hex,
        fingerprint="fp",
        kind=AlertKind.EVASION,
        detector="evasion_campaign",
        severity=Severity.CRITICAL,
        model_id=model,
        model_version="3",
        client_id=None,
        detected_at=now,
        emitted_at=now,
        score=5.0,
        threshold=2.0,
        summary="evasion campaign",
    )
    return StepContext(
        idempotency_key=key or f"incident-{uuid.uuid4().hex[:8]}/evasion/1",
        incident_id="incident-7",
        playbook="evasion",
        alert=alert,
        deadline=time.monotonic() + 30,
    )


WEBHOOK = RollbackParams(registry="webhook")


async def test_rollback_moves_the_alias_and_a_replay_after_restart_is_a_noop(
    registry: ContractRegistry, rollback: RollbackResponder
) -> None:
    model = registry.add("team/fraud model")  # slash and space: percent-encoded, still signed
    ctx = context(model)

    first = await rollback(WEBHOOK, ctx)
    async with responder(registry.url) as restarted:
        replay = await restarted(WEBHOOK, ctx)

    assert first == {
        "registry": "webhook",
        "model": model,
        "alias": "champion",
        "before_version": "3",
        "after_version": "2",
        "verified": True,
        "noop": False,
    }
    assert replay == {**first, "noop": True}
    assert registry.models[model].aliases["champion"] == 2
    assert registry.alias_posts == [{"version": "2", "idempotency_key": ctx.idempotency_key}]
    assert registry.rejected == 0


async def test_failed_pending_and_deleted_versions_are_never_targets(
    registry: ContractRegistry, rollback: RollbackResponder
) -> None:
    model = registry.add("m", versions=5, statuses={4: "failed", 3: "pending", 2: "deleted"})
    result = await rollback(WEBHOOK, context(model))
    assert result["after_version"] == "1"
    with pytest.raises(ResponderError, match="version 2 does not exist"):
        await rollback(RollbackParams(registry="webhook", to_version=2), context(model))


async def test_a_wrong_secret_is_refused_by_the_receiver_and_is_permanent(
    registry: ContractRegistry,
) -> None:
    model = registry.add("m")
    async with responder(registry.url, secret="not-the-shared-secret") as wrong:
        with pytest.raises(ResponderError, match="HTTP 401") as raised:
            await wrong(WEBHOOK, context(model))
    assert raised.value.retryable is False
    assert "check the registry credentials" in str(raised.value)
    assert "not-the-shared-secret" not in str(raised.value)
    assert registry.rejected == 1
    assert registry.models[model].aliases["champion"] == 3


@pytest.mark.parametrize("how", ["unsigned", "stale", "tampered"])
def test_the_receiver_refuses_unsigned_stale_and_tampered_requests(
    registry: ContractRegistry, how: str
) -> None:
    model = registry.add("m")
    path = f"{PREFIX}/models/m/aliases/champion"
    body = json.dumps({"version": "1", "idempotency_key": "k"}).encode()
    headers: dict[str, str] = {}
    if how == "stale":
        an_hour_ago = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
        headers[SIGNATURE_HEADER] = sign(SECRET, "POST", path, body, timestamp=an_hour_ago)
    elif how == "tampered":
        headers[SIGNATURE_HEADER] = sign(SECRET, "POST", path, b'{"version": "2"}')
    url = registry.url.removesuffix(PREFIX) + path
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    assert response.status_code == 401
    assert registry.models[model].aliases["champion"] == 3
    # and the same request properly signed goes through
    headers[SIGNATURE_HEADER] = sign(SECRET, "POST", path, body)
    assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == 204
    assert registry.models[model].aliases["champion"] == 1


async def test_a_5xx_while_moving_is_retried_by_the_engine_policy_and_finishes_once(
    registry: ContractRegistry, rollback: RollbackResponder
) -> None:
    model = registry.add("m")
    ctx = context(model)
    registry.fail_next["POST"] = 503  # the alias move fails once, after the pending record

    with pytest.raises(ResponderError, match="HTTP 503") as raised:
        await rollback(WEBHOOK, ctx)
    assert raised.value.retryable is True
    assert registry.models[model].aliases["champion"] == 3

    registry.fail_next["POST"] = 503
    # 1 s: tenacity 9.2 warns on any other `initial` in base.call_with_retries (reported).
    policy = RetryPolicy(retries=2, initial_backoff=timedelta(seconds=1))
    result = await call_with_retries(lambda: rollback(WEBHOOK, ctx), policy, ctx.deadline)
    assert (result["before_version"], result["after_version"]) == ("3", "2")
    assert registry.models[model].aliases["champion"] == 2  # the pending record kept 2, not 1


async def test_a_registry_slower_than_the_timeout_is_a_retryable_error(
    registry: ContractRegistry,
) -> None:
    model = registry.add("m")
    registry.stall = threading.Event()
    try:
        async with responder(registry.url, timeout_s=0.5) as impatient:
            with pytest.raises(ResponderError, match=r"did not answer .* within 0\.5s") as raised:
                await impatient(WEBHOOK, context(model))
    finally:
        registry.stall.set()
    assert raised.value.retryable is True
    assert registry.models[model].aliases["champion"] == 3


async def test_an_unknown_model_is_permanent(rollback: RollbackResponder) -> None:
    with pytest.raises(ResponderError, match="HTTP 404") as raised:
        await rollback(WEBHOOK, context("nobody"))
    assert raised.value.retryable is False
