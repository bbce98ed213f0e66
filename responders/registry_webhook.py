"""Generic signed-HTTP registry adapter for registries without MLflow (SageMaker, Vertex, ...).

You put a small service in front of your registry that speaks this JSON contract; mlwarden
drives rollbacks through it. `{base}` is `MLWARDEN_REGISTRY__WEBHOOK_URL`; `{model}` and
`{alias}` are percent-encoded path segments; versions are positive integers (JSON numbers or
numeric strings), higher = newer.

- `GET {base}/models/{model}/aliases/{alias}` → 200 `{"version": "3"}`, or
  `{"version": null}` when the alias is unset; 404 when the model does not exist.
- `GET {base}/models/{model}/versions` → 200
  `{"versions": [{"version": "3", "status": "ready"}, ...]}`; `status` is optional (default
  `ready`) and one of ready, pending, failed, deleted: only ready versions are targets.
- `POST {base}/models/{model}/aliases/{alias}` with `{"version": "2", "idempotency_key": "…"}`
  → any 2xx once the alias points there. An upsert: the same request twice is harmless.
- `GET {base}/models/{model}/records/{id}` → 200 `{"record": {...}}` as last stored; 404 if none.
- `PUT {base}/models/{model}/records/{id}` with `{"record": {...}}` → any 2xx once stored.

Records are mlwarden's memory of a rollback step (a few hundred bytes of JSON, one per step):
keep them as durable as the alias itself, e.g. as tags on the model package, so a restarted
mlwarden finds what it already did. Errors: 429 and 5xx are retried (Retry-After honoured),
any other 4xx is final; reply within the timeout.

Every request is signed, Stripe-style, with the shared secret
(`MLWARDEN_REGISTRY__WEBHOOK_SECRET`)::

    X-Mlwarden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, signed_payload)>
    signed_payload = "<t>.<METHOD>.<path and query as sent>." + raw body bytes

Method and path are signed as well as the body, so a captured request cannot be replayed
against another model or alias; the timestamp bounds replays in time. Receivers call
`verify_signature(secret, header, method, path, body)` (or reimplement those ten lines) and
answer 401 when it raises. Several `v1=` entries may appear, to rotate secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from mlwarden.responders.registry_base import RegistryVersion, request_json, safe_url
from mlwarden.schemas.errors import MlwardenError, ResponderError

SIGNATURE_HEADER: Final = "X-Mlwarden-Signature"
DEFAULT_TOLERANCE_S: Final = 300.0
"""How far a signature's timestamp may be from the receiver's clock (Stripe's default)."""
_USABLE_STATUS: Final = "ready"


class WebhookSignatureError(MlwardenError):
    """A request whose signature header is missing, malformed, stale or wrong (answer 401)."""


def _signed_payload(timestamp: int, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}.{method.upper()}.{path}.".encode() + body


def _digest(secret: str | bytes, payload: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(
    secret: str | bytes, method: str, path: str, body: bytes, *, timestamp: int | None = None
) -> str:
    """The `X-Mlwarden-Signature` value for a request (`path` includes the query string)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={_digest(secret, _signed_payload(when, method, path, body))}"


def verify_signature(
    secrets: str | bytes | Iterable[str | bytes],
    header: str | None,
    method: str,
    path: str,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a request's `X-Mlwarden-Signature`; return its timestamp, or raise.

    `secrets` is the shared secret, or several while one is being rotated. `path` is the
    request target as received (path plus `?query`). Raises `WebhookSignatureError` when the
    header is missing or malformed, its timestamp is more than `tolerance_s` from `now`
    (default: this machine's clock), or no `v1` matches; comparisons are constant-time.
    """
    if not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} element {part.strip()!r}")
        if key == "t":
            if not value.isdigit():
                raise WebhookSignatureError(f"{SIGNATURE_HEADER} timestamp is not a number")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} needs t= and at least one v1=")
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            f"{SIGNATURE_HEADER} timestamp is {abs(clock - timestamp):.0f}s from this clock, "
            f"over the {tolerance_s:.0f}s tolerance (a replay, or clocks out of sync)"
        )
    keys: list[str | bytes] = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    payload = _signed_payload(timestamp, method, path, body)
    for secret in keys:
        expected = _digest(secret, payload)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return timestamp
    raise WebhookSignatureError(f"{SIGNATURE_HEADER} does not match: wrong secret or altered")


def _segment(value: str) -> str:
    return quote(value, safe="")


class WebhookRegistry:
    """Rollback operations through the signed JSON contract in this module's docstring."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: SecretStr,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not secret.get_secret_value():
            raise ValueError("the webhook registry needs a non-empty signing secret")
        self._base = url.rstrip("/")
        self._secret = secret
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            headers={"Accept": "application/json"}, transport=transport
        )

    def __repr__(self) -> str:
        return f"WebhookRegistry(url={safe_url(self._base)!r})"

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        timeout_s: float,
        *,
        body: Mapping[str, Any] | None = None,
        not_found_is_none: bool = False,
    ) -> dict[str, Any] | None:
        url = httpx.URL(self._base + path)
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        target = url.raw_path.decode("ascii")
        headers = {SIGNATURE_HEADER: sign(self._secret.get_secret_value(), method, target, content)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        reply = await request_json(
            self._client,
            method,
            str(url),
            registry=self.name,
            what=what,
            timeout_s=min(timeout_s, self._timeout_s),
            content=content or None,
            headers=headers,
            not_found_is_none=not_found_is_none,
            secrets=(self._secret.get_secret_value(),),
        )
        if reply is None:
            return None
        if not isinstance(reply, dict):
            raise _contract_error(what, "a JSON object")
        return reply

    async def alias_version(self, model: str, alias: str, timeout_s: float) -> int | None:
        what = f"reading alias {alias!r} of {model!r}"
        reply = await self._call(
            "GET", f"/models/{_segment(model)}/aliases/{_segment(alias)}", what, timeout_s
        )
        if reply is None or "version" not in reply:
            raise _contract_error(what, '{"version": "<n>" | null}')
        version = reply["version"]
        return None if version is None else _version_number(version, what)

    async def versions(self, model: str, timeout_s: float) -> list[RegistryVersion]:
        what = f"listing the versions of {model!r}"
        reply = await self._call("GET", f"/models/{_segment(model)}/versions", what, timeout_s)
        entries = None if reply is None else reply.get("versions")
        if not isinstance(entries, list):
            raise _contract_error(what, '{"versions": [{"version": "<n>", "status": ...}]}')
        found: list[RegistryVersion] = []
        for entry in entries:
            if not isinstance(entry, dict) or "version" not in entry:
                raise _contract_error(what, 'a list of {"version": "<n>"} objects')
            status = str(entry.get("status", _USABLE_STATUS)).lower()
            if status == "deleted":
                continue
            found.append(
                RegistryVersion(
                    number=_version_number(entry["version"], what),
                    usable=status == _USABLE_STATUS,
                )
            )
        return sorted(found)

    async def set_alias(
        self, model: str, alias: str, version: int, idempotency_key: str, timeout_s: float
    ) -> None:
        await self._call(
            "POST",
            f"/models/{_segment(model)}/aliases/{_segment(alias)}",
            f"moving alias {alias!r} of {model!r} to version {version}",
            timeout_s,
            body={"version": str(version), "idempotency_key": idempotency_key},
        )

    async def load_record(
        self, model: str, record_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        what = f"reading the rollback record of {model!r}"
        reply = await self._call(
            "GET",
            f"/models/{_segment(model)}/records/{_segment(record_id)}",
            what,
            timeout_s,
            not_found_is_none=True,
        )
        if reply is None:
            return None
        record = reply.get("record")
        if not isinstance(record, dict):
            raise _contract_error(what, '{"record": {...}}')
        return record

    async def save_record(
        self, model: str, record_id: str, record: Mapping[str, Any], timeout_s: float
    ) -> None:
        await self._call(
            "PUT",
            f"/models/{_segment(model)}/records/{_segment(record_id)}",
            f"recording the rollback on {model!r}",
            timeout_s,
            body={"record": dict(record)},
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _contract_error(what: str, expected: str) -> ResponderError:
    return ResponderError(
        f"webhook registry answered {what} outside the contract (expected {expected}); see "
        "mlwarden.responders.registry_webhook for the JSON it must speak",
        retryable=False,
    )


def _version_number(value: object, what: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number <= 0 or isinstance(value, bool):
        raise _contract_error(what, f"positive integer versions, not {value!r}")
    return number
