"""MLflow Model Registry adapter: plain REST (`/api/2.0/mlflow/...`) through httpx.

Why not the `mlflow` client: it is a heavy import for a worker that needs five calls, it retries
on its own (the engine owns retries), and its timeouts are global. The endpoints used:

- `GET  registered-models/get?name=` — the model's aliases and tags in one read
- `GET  model-versions/search?filter=name='…'` — its live versions (deleted ones are not listed)
- `POST registered-models/alias` `{name, alias, version}` — move the alias (an upsert)
- `POST registered-models/set-tag` `{name, key, value}` — the step's record, stored as the
  registered-model tag `mlwarden.rollback.<record_id>`, so the record lives and dies with the
  model and anyone reading the model in the MLflow UI sees who moved its alias and why.

Authentication: an optional bearer token (Databricks personal access tokens, or a gateway in
front of a self-hosted server), sent as `Authorization: Bearer …` and never put in a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import httpx
from pydantic import SecretStr

from mlwarden.responders.registry_base import RegistryVersion, request_json, safe_url
from mlwarden.schemas.errors import ResponderError

RECORD_TAG_PREFIX: Final = "mlwarden.rollback."
_API: Final = "/api/2.0/mlflow"
_PAGE_SIZE: Final = 1000
_MAX_PAGES: Final = 100
"""Bounds the version listing (100k versions): a registry that keeps paging is misbehaving."""
_USABLE_STATUSES: Final = frozenset({"READY", ""})
"""`PENDING_REGISTRATION` and `FAILED_REGISTRATION` versions have no usable artifacts."""


def _name_filter(model: str) -> str:
    """`name='model'` for model-versions/search, quoted so any model name stays one literal."""
    if "'" not in model:
        return f"name='{model}'"
    if '"' not in model:
        return f'name="{model}"'
    raise ResponderError(
        f"model name {model!r} holds both quote characters, which MLflow's search filter "
        "cannot express; rename the registered model",
        retryable=False,
    )


class MlflowRegistry:
    """Rollback operations on an MLflow tracking server's model registry.

    `url` is the server's base URL (`http://mlflow:5000`, or a Databricks workspace URL);
    `timeout_s` caps each request (the step's remaining time caps it further).
    """

    name = "mlflow"

    def __init__(
        self,
        url: str,
        *,
        token: SecretStr | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api = url.rstrip("/") + _API
        self._timeout_s = timeout_s
        self._secrets = (token.get_secret_value(),) if token is not None else ()
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self._client = httpx.AsyncClient(headers=headers, transport=transport)

    def __repr__(self) -> str:
        return f"MlflowRegistry(url={safe_url(self._api.removesuffix(_API))!r})"

    async def _call(
        self,
        method: str,
        endpoint: str,
        what: str,
        timeout_s: float,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        content = None if body is None else json.dumps(body).encode()
        headers = None if body is None else {"Content-Type": "application/json"}
        reply = await request_json(
            self._client,
            method,
            f"{self._api}/{endpoint}",
            registry=self.name,
            what=what,
            timeout_s=min(timeout_s, self._timeout_s),
            params=params,
            content=content,
            headers=headers,
            secrets=self._secrets,
        )
        if reply is None:
            return {}
        if not isinstance(reply, dict):
            raise ResponderError(
                f"mlflow registry answered {what} with JSON that is not an object: check that "
                "the URL in the settings points at an MLflow server",
                retryable=False,
            )
        return reply

    async def _model(self, model: str, timeout_s: float) -> dict[str, Any]:
        reply = await self._call(
            "GET",
            "registered-models/get",
            f"reading registered model {model!r}",
            timeout_s,
            params={"name": model},
        )
        registered = reply.get("registered_model")
        if not isinstance(registered, dict):
            raise ResponderError(
                f"mlflow registry returned no registered model for {model!r}", retryable=False
            )
        return registered

    async def alias_version(self, model: str, alias: str, timeout_s: float) -> int | None:
        registered = await self._model(model, timeout_s)
        for entry in registered.get("aliases", []):
            if entry.get("alias") == alias:
                return _version_number(entry.get("version"), model)
        return None

    async def versions(self, model: str, timeout_s: float) -> list[RegistryVersion]:
        found: list[RegistryVersion] = []
        page_token: str | None = None
        for _ in range(_MAX_PAGES):
            params = {"filter": _name_filter(model), "max_results": str(_PAGE_SIZE)}
            if page_token:
                params["page_token"] = page_token
            reply = await self._call(
                "GET",
                "model-versions/search",
                f"listing the versions of {model!r}",
                timeout_s,
                params=params,
            )
            for entry in reply.get("model_versions", []):
                if entry.get("name") != model:
                    continue
                found.append(
                    RegistryVersion(
                        number=_version_number(entry.get("version"), model),
                        usable=str(entry.get("status", "")) in _USABLE_STATUSES,
                    )
                )
            page_token = reply.get("next_page_token") or None
            if page_token is None:
                return sorted(found)
        raise ResponderError(
            f"mlflow registry kept paging the versions of {model!r} past "
            f"{_PAGE_SIZE * _MAX_PAGES} of them; archive old versions or name the target "
            "version in the playbook (to_version: N)",
            retryable=False,
        )

    async def set_alias(
        self, model: str, alias: str, version: int, idempotency_key: str, timeout_s: float
    ) -> None:
        # MLflow has no idempotency key on this call; it needs none: it is an upsert.
        await self._call(
            "POST",
            "registered-models/alias",
            f"moving alias {alias!r} of {model!r} to version {version}",
            timeout_s,
            body={"name": model, "alias": alias, "version": str(version)},
        )

    async def load_record(
        self, model: str, record_id: str, timeout_s: float
    ) -> dict[str, Any] | None:
        key = RECORD_TAG_PREFIX + record_id
        registered = await self._model(model, timeout_s)
        for tag in registered.get("tags", []):
            if tag.get("key") == key:
                try:
                    record = json.loads(tag.get("value", ""))
                except json.JSONDecodeError as exc:
                    raise ResponderError(
                        f"tag {key!r} on registered model {model!r} is not JSON; delete the "
                        "tag to let the rollback step run again",
                        retryable=False,
                    ) from exc
                return record if isinstance(record, dict) else None
        return None

    async def save_record(
        self, model: str, record_id: str, record: Mapping[str, Any], timeout_s: float
    ) -> None:
        await self._call(
            "POST",
            "registered-models/set-tag",
            f"recording the rollback on {model!r}",
            timeout_s,
            body={
                "name": model,
                "key": RECORD_TAG_PREFIX + record_id,
                "value": json.dumps(record, sort_keys=True, separators=(",", ":")),
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _version_number(value: object, model: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ResponderError(
            f"mlflow registry reported version {value!r} of {model!r}, which is not a number",
            retryable=False,
        ) from None
