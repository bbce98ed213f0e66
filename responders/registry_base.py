"""The model-registry adapter contract that `rollback_model` drives, and its HTTP error policy.

A rollback needs five things from a registry, whatever it is (MLflow, SageMaker, Vertex, an
in-house service behind the signed webhook): read where an alias points, list the versions,
move the alias, and keep a small record per step so that a replayed step finds its own earlier
result *in the registry itself* (a restarted worker has no other memory of it). Adapters
implement `RegistryAdapter`; `rollback.RollbackResponder` holds the logic they share.

Every adapter talks HTTP through httpx and classifies failures the same way
(`request_json`): connection errors, timeouts, 429 and 5xx are retryable; any other 4xx is
permanent. Messages name the registry and the operation and say what to check, and never carry
a credential: each adapter passes the strings it must scrub.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

from mlwarden.schemas.errors import ResponderError

_MAX_DETAIL: Final = 300
"""Characters of a registry's error body quoted in our message: enough to read, not a dump."""


@dataclass(frozen=True, order=True)
class RegistryVersion:
    """One version of a registered model. `usable` is False for failed or pending versions.

    Versions are ordered by number: registries that number versions (MLflow, SageMaker model
    packages, Vertex) agree that a higher number is newer, which is what "previous" relies on.
    """

    number: int
    usable: bool = True


class RegistryAdapter(Protocol):
    """What one registry offers a rollback. Every call gets its own timeout in seconds."""

    name: str
    """The `registry` value of `RollbackParams` this adapter serves (`mlflow`, `webhook`)."""

    async def alias_version(self, model: str, alias: str, timeout_s: float) -> int | None:
        """The version `alias` points at, or None when the model has no such alias."""
        ...

    async def versions(self, model: str, timeout_s: float) -> list[RegistryVersion]:
        """Every live (not deleted) version of `model`."""
        ...

    async def set_alias(
        self, model: str, alias: str, version: int, idempotency_key: str, timeout_s: float
    ) -> None:
        """Point `alias` at `version` (an upsert: moving it twice to one version is harmless)."""
        ...

    async def load_record(
        self, model: str, record_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        """The record `save_record` stored under `record_id` for `model`, or None."""
        ...

    async def save_record(
        self, model: str, record_id: str, record: Mapping[str, Any], timeout_s: float
    ) -> None:
        """Store a small JSON object under `record_id` for `model`, replacing an earlier one."""
        ...

    async def aclose(self) -> None:
        """Release the adapter's HTTP connections."""
        ...


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every non-empty secret replaced by `***` (for messages built from replies)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def safe_url(url: str | httpx.URL) -> str:
    """The URL without user info, query or fragment: what an error message may show."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def retry_after_s(response: httpx.Response) -> float | None:
    """The response's Retry-After in seconds (delta-seconds or an HTTP date), if it has one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    response: httpx.Response, *, registry: str, what: str, secrets: Iterable[str] = ()
) -> ResponderError:
    """The `ResponderError` for an unsuccessful reply: 429/5xx retryable, other 4xx permanent."""
    detail = scrub(response.text[:_MAX_DETAIL].strip(), secrets)
    status = response.status_code
    where = f"{registry} registry ({safe_url(response.request.url)})"
    if status == 429:
        return ResponderError(
            f"{where} rate-limited {what} (HTTP 429); will retry: {detail}",
            retryable=True,
            retry_after_s=retry_after_s(response),
        )
    if status >= 500:
        return ResponderError(
            f"{where} failed {what} (HTTP {status}); will retry: {detail}",
            retryable=True,
            retry_after_s=retry_after_s(response),
        )
    if status in (401, 403):
        hint = "check the registry credentials in the settings (MLWARDEN_REGISTRY__...)"
        return ResponderError(
            f"{where} refused {what} (HTTP {status}): {hint}: {detail}", retryable=False
        )
    if status == 404:
        return ResponderError(
            f"{where} found nothing for {what} (HTTP 404): check the model name and the "
            f"registry URL: {detail}",
            retryable=False,
        )
    return ResponderError(f"{where} rejected {what} (HTTP {status}): {detail}", retryable=False)


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    registry: str,
    what: str,
    timeout_s: float,
    params: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    not_found_is_none: bool = False,
    secrets: Iterable[str] = (),
) -> Any:
    """Send one request and return its decoded JSON body (None for an empty body).

    With `not_found_is_none`, a 404 returns None instead of raising: for lookups whose
    absence is an answer (no record stored yet). Every failure becomes a `ResponderError`.
    """
    secrets = tuple(secrets)
    if timeout_s <= 0:
        raise ResponderError(
            f"the step's deadline passed before {what} on the {registry} registry",
            retryable=True,
        )
    try:
        response = await client.request(
            method, url, params=params, content=content, headers=headers, timeout=timeout_s
        )
    except httpx.TimeoutException as exc:
        raise ResponderError(
            f"{registry} registry ({safe_url(url)}) did not answer {what} within "
            f"{timeout_s:.1f}s; will retry",
            retryable=True,
        ) from exc
    except httpx.TransportError as exc:
        reason = scrub(f"{type(exc).__name__}: {exc}", secrets)
        raise ResponderError(
            f"cannot reach the {registry} registry at {safe_url(url)} for {what} ({reason}); "
            "check that it runs and that the URL in the settings is right; will retry",
            retryable=True,
        ) from exc
    if not_found_is_none and response.status_code == 404:
        return None
    if not response.is_success:
        raise error_for_status(response, registry=registry, what=what, secrets=secrets)
    if not response.content.strip():
        return None
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise ResponderError(
            f"{registry} registry ({safe_url(url)}) answered {what} with something that is not "
            "JSON: check that the URL in the settings points at the registry's API",
            retryable=False,
        ) from exc
