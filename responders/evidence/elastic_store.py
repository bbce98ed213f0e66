"""Evidence in Elasticsearch: bulk `create` into a data stream, searched with the query DSL.

`op_type: create` is what data streams require, and it makes writes idempotent: a document
whose id is already there answers 409 and is counted as `existing`, never overwritten. Writes
wait for a refresh (`refresh=wait_for`), so the next snapshot of the same incident finds the
chain's tail. Unreachable, 429 and 5xx raise `EvidenceStoreError(retryable=True)`, which the
spooling wrapper answers by spooling; a rejected document (mapping) is not retryable.

Within a data stream, ids are unique per backing index: a document re-sent after a rollover
can be stored twice. Reads therefore drop repeated ids, and `verify` tells such identical
copies from tampering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from elastic_transport import AiohttpHttpNode, HttpHeaders
from elastic_transport._node import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError, TransportError
from elasticsearch.helpers import async_bulk

from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument, format_timestamp
from mlwarden.responders.evidence.errors import EvidenceStoreError
from mlwarden.responders.evidence.query import Query
from mlwarden.responders.evidence.settings import EvidenceSettings
from mlwarden.responders.evidence.store import WriteResult
from mlwarden.responders.evidence.translate_es import to_elasticsearch

_PAGE: Final = 1000
_SORT_NEWEST: Final = [
    {"@timestamp": "desc"},
    {"mlwarden.incident.id": "asc"},
    {"mlwarden.chain.seq": "asc"},
    {"mlwarden.snapshot.key": "asc"},
    {"mlwarden.snapshot.index": "asc"},
]
_SORT_CHAIN: Final = [
    {"mlwarden.chain.seq": "asc"},
    {"mlwarden.snapshot.key": "asc"},
    {"mlwarden.snapshot.index": "asc"},
]
_COMPAT_PREFIX: Final = "application/vnd.elasticsearch+"


class PlainJsonNode(AiohttpHttpNode):
    """The client's aiohttp node, sending `application/json` where the client puts
    `application/vnd.elasticsearch+json; compatible-with=9`.

    elasticsearch-py rewrites Accept/Content-Type to the compatibility media type after every
    user-supplied header, so the transport's `node_class` is the supported hook left: the
    request is otherwise untouched.
    """

    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and value.startswith(_COMPAT_PREFIX):
                    subtype = value[len(_COMPAT_PREFIX) :].split(";", 1)[0].strip()
                    headers[name] = f"application/{subtype}"
        return await super().perform_request(method, target, body, headers, request_timeout)


def elasticsearch_client(settings: EvidenceSettings) -> AsyncElasticsearch:
    """An `AsyncElasticsearch` for `settings` (API key, timeout, media type)."""
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout_s,
        "max_retries": 0,  # the playbook engine's retry policy is the one that retries
        "retry_on_timeout": False,
    }
    if settings.api_key is not None:
        options["api_key"] = settings.api_key.get_secret_value()
    if settings.plain_json_media_type:
        options["node_class"] = PlainJsonNode
    return AsyncElasticsearch(settings.elasticsearch_url, **options)


class ElasticEvidenceStore:
    """Evidence documents in the data stream (or index) `target`."""

    name: Final = "elasticsearch"

    def __init__(
        self, client: AsyncElasticsearch, target: str, *, refresh: str = "wait_for"
    ) -> None:
        self.client = client
        self.target = target
        self.refresh = refresh

    @classmethod
    def from_settings(cls, settings: EvidenceSettings) -> ElasticEvidenceStore:
        return cls(elasticsearch_client(settings), settings.data_stream)

    async def write(self, documents: Sequence[EvidenceDocument]) -> WriteResult:
        if not documents:
            return WriteResult()
        actions = [
            {"_op_type": "create", "_index": self.target, "_id": d.id, "_source": d.source}
            for d in documents
        ]
        try:
            written, errors = await async_bulk(
                self.client,
                actions,
                raise_on_error=False,
                raise_on_exception=True,
                refresh=self.refresh,
                max_retries=0,
            )
        except (TransportError, ApiError) as exc:
            raise _store_error(exc, f"bulk write to {self.target}") from exc
        existing = 0
        failures: list[Mapping[str, Any]] = []
        for item in errors if isinstance(errors, list) else []:
            outcome = next(iter(item.values()))
            if outcome.get("status") == 409:
                existing += 1
            else:
                failures.append(outcome)
        if failures:
            statuses = {int(f.get("status", 0)) for f in failures}
            retryable = all(s == 429 or s >= 500 for s in statuses)
            first = failures[0].get("error", {})
            reason = first.get("reason", first) if isinstance(first, dict) else first
            raise EvidenceStoreError(
                f"Elasticsearch refused {len(failures)} of {len(documents)} evidence documents "
                f"(status {sorted(statuses)}): {reason}",
                retryable=retryable,
            )
        return WriteResult(written=written, existing=existing)

    async def last_link(self, incident_id: str) -> ChainLink | None:
        hits = await self._search(
            {"term": {"mlwarden.incident.id": incident_id}},
            sort=[{"mlwarden.chain.seq": "desc"}],
            size=1,
        )
        return hits[0].link if hits else None

    async def search(
        self, query: Query, since: datetime | None = None, limit: int = 100
    ) -> list[EvidenceDocument]:
        dsl = to_elasticsearch(query)
        if since is not None:
            dsl = {
                "bool": {
                    "filter": [dsl, {"range": {"@timestamp": {"gte": format_timestamp(since)}}}]
                }
            }
        return await self._search(dsl, sort=_SORT_NEWEST, size=limit)

    async def incident_documents(self, incident_id: str) -> list[EvidenceDocument]:
        documents: list[EvidenceDocument] = []
        seen: set[str] = set()
        after: list[Any] | None = None
        while True:
            page = await self._search(
                {"term": {"mlwarden.incident.id": incident_id}},
                sort=_SORT_CHAIN,
                size=_PAGE,
                search_after=after,
            )
            for document in page:
                if document.id not in seen:
                    seen.add(document.id)
                    documents.append(document)
            if len(page) < _PAGE:
                return documents
            last = page[-1].source["mlwarden"]
            after = [last["chain"]["seq"], last["snapshot"]["key"], last["snapshot"]["index"]]

    async def _search(
        self,
        query: dict[str, Any],
        *,
        sort: list[dict[str, str]],
        size: int,
        search_after: list[Any] | None = None,
    ) -> list[EvidenceDocument]:
        extra: dict[str, Any] = {}
        if search_after is not None:
            extra["search_after"] = search_after
        try:
            response = await self.client.search(
                index=self.target,
                query=query,
                sort=sort,
                size=size,
                ignore_unavailable=True,
                **extra,
            )
        except NotFoundError:
            return []  # nothing written yet
        except (TransportError, ApiError) as exc:
            raise _store_error(exc, f"search in {self.target}") from exc
        seen: set[str] = set()
        hits: list[EvidenceDocument] = []
        for hit in response["hits"]["hits"]:
            if hit["_id"] not in seen:
                seen.add(hit["_id"])
                hits.append(EvidenceDocument(hit["_id"], hit["_source"]))
        return hits

    async def close(self) -> None:
        await self.client.close()


def _store_error(exc: TransportError | ApiError, action: str) -> EvidenceStoreError:
    if isinstance(exc, ApiError):
        status = exc.meta.status
        retryable = status == 429 or status >= 500
        hint = "" if retryable else " (check the templates: `mlwarden evidence setup`)"
        return EvidenceStoreError(
            f"Elasticsearch {action}: {status} {exc.message}{hint}", retryable=retryable
        )
    return EvidenceStoreError(
        f"Elasticsearch unreachable for {action}: {exc.message}", retryable=True
    )
