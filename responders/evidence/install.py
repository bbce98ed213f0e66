"""`mlwarden evidence setup`: templates and ILM into Elasticsearch, saved objects into Kibana.

Idempotent: every object is put under a fixed name (Elasticsearch) or imported with
`overwrite=true` (Kibana), so running setup again updates in place.
"""

from __future__ import annotations

from typing import Any

import httpx
from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from pydantic import SecretStr

from mlwarden.responders.evidence import kibana, templates
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.settings import EvidenceSettings


async def install_elasticsearch(
    client: AsyncElasticsearch, settings: EvidenceSettings
) -> list[str]:
    """Put the ILM policy (if enabled), both component templates and the index template."""
    done: list[str] = []
    try:
        if settings.install_ilm:
            try:
                await client.ilm.put_lifecycle(
                    name=templates.ILM_POLICY, body=templates.ilm_policy()
                )
            except ApiError as exc:
                if exc.meta.status in (400, 404, 405):
                    raise EvidenceStoreError(
                        f"{settings.elasticsearch_url} has no ILM API ({exc.meta.status}): on "
                        "OpenSearch-compatible servers set MLWARDEN_EVIDENCE__INSTALL_ILM=false",
                        retryable=False,
                    ) from exc
                raise
            done.append(f"ILM policy {templates.ILM_POLICY}")
        await client.cluster.put_component_template(
            name=templates.MAPPINGS_COMPONENT, body=templates.mappings_component()
        )
        done.append(f"component template {templates.MAPPINGS_COMPONENT}")
        await client.cluster.put_component_template(
            name=templates.SETTINGS_COMPONENT,
            body=templates.settings_component(ilm=settings.install_ilm),
        )
        done.append(f"component template {templates.SETTINGS_COMPONENT}")
        await client.indices.put_index_template(
            name=templates.INDEX_TEMPLATE,
            body=templates.index_template(data_stream=settings.use_data_stream),
        )
        kind = "data stream" if settings.use_data_stream else "index"
        done.append(f"index template {templates.INDEX_TEMPLATE} ({kind} {settings.data_stream})")
    except ApiError as exc:
        raise EvidenceStoreError(
            f"Elasticsearch refused the evidence templates: {exc.meta.status} {exc.message} "
            f"{_reason(exc.body)}",
            retryable=False,
        ) from exc
    except TransportError as exc:
        raise EvidenceStoreError(
            f"Elasticsearch at {settings.elasticsearch_url} is unreachable: {exc.message}",
            retryable=True,
        ) from exc
    return done


async def import_kibana_objects(
    kibana_url: str, api_key: SecretStr | None = None, timeout_s: float = 30.0
) -> int:
    """Import the saved objects (overwrite); returns how many Kibana accepted."""
    headers = {"kbn-xsrf": "mlwarden"}
    if api_key is not None:
        headers["Authorization"] = f"ApiKey {api_key.get_secret_value()}"
    url = f"{kibana_url.rstrip('/')}/api/saved_objects/_import"
    files = {"file": ("saved_objects.ndjson", kibana.ndjson().encode(), "application/ndjson")}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.post(
                url, params={"overwrite": "true"}, headers=headers, files=files
            )
    except httpx.HTTPError as exc:
        raise EvidenceStoreError(
            f"Kibana at {kibana_url} is unreachable: {exc}", retryable=True
        ) from exc
    body: dict[str, Any] = response.json() if response.content else {}
    if response.status_code != 200 or not body.get("success", False):
        problems = body.get("errors") or body.get("message") or response.text[:300]
        raise EvidenceStoreError(
            f"Kibana refused the saved objects ({response.status_code}): {problems}",
            retryable=response.status_code >= 500,
        )
    return int(body.get("successCount", 0))


def _reason(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("reason", ""))
    return ""
