"""Kibana saved objects for evidence, and the links that open them.

`deploy/kibana/saved_objects.ndjson` is `saved_objects()` written out (`python -m
mlwarden.responders.evidence.kibana deploy/kibana/saved_objects.ndjson`; a test keeps the file
current). It imports through Kibana's saved-objects import API (`mlwarden evidence setup`, or
the UI): one data view over the evidence data streams, saved searches for "all evidence of
incident X" and "all queries of client Y" (their query is a placeholder the links replace),
and two dashboards, on-call and postmortem. Objects carry no migration versions, so Kibana
migrates them from the oldest shape it knows, which every 7.x/8.x/9.x release accepts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

DATA_VIEW_ID: Final = "mlwarden-evidence"
INCIDENT_SEARCH_ID: Final = "mlwarden-evidence-incident"
CLIENT_QUERIES_SEARCH_ID: Final = "mlwarden-evidence-client-queries"
ALERTS_SEARCH_ID: Final = "mlwarden-evidence-alerts"
ONCALL_DASHBOARD_ID: Final = "mlwarden-evidence-oncall"
POSTMORTEM_DASHBOARD_ID: Final = "mlwarden-evidence-postmortem"


def _search(
    object_id: str, title: str, description: str, query: str, columns: list[str], sort: str
) -> dict[str, Any]:
    source = {
        "query": {"query": query, "language": "kuery"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return {
        "type": "search",
        "id": object_id,
        "attributes": {
            "title": title,
            "description": description,
            "columns": columns,
            "sort": [["@timestamp", sort]],
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
        },
        "references": [
            {
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                "type": "index-pattern",
                "id": DATA_VIEW_ID,
            }
        ],
    }


def _markdown(object_id: str, title: str, text: str) -> dict[str, Any]:
    vis_state = {"title": title, "type": "markdown", "aggs": [], "params": {"markdown": text}}
    return {
        "type": "visualization",
        "id": object_id,
        "attributes": {
            "title": title,
            "description": "",
            "visState": json.dumps(vis_state),
            "uiStateJSON": "{}",
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}})
            },
        },
        "references": [],
    }


def _dashboard(
    object_id: str, title: str, description: str, panels: list[tuple[str, str, int, int]]
) -> dict[str, Any]:
    """`panels`: (object type, object id, width, height), laid out top to bottom."""
    panels_json: list[dict[str, Any]] = []
    references: list[dict[str, str]] = []
    y = 0
    for number, (kind, ref_id, width, height) in enumerate(panels):
        name = f"panel_{number}"
        panels_json.append(
            {
                "panelIndex": str(number + 1),
                "gridData": {"x": 0, "y": y, "w": width, "h": height, "i": str(number + 1)},
                "embeddableConfig": {},
                "version": "7.17.0",
                "type": kind,
                "panelRefName": name,
            }
        )
        references.append({"name": name, "type": kind, "id": ref_id})
        y += height
    return {
        "type": "dashboard",
        "id": object_id,
        "attributes": {
            "title": title,
            "description": description,
            "panelsJSON": json.dumps(panels_json),
            "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
            "timeRestore": False,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps(
                    {"query": {"query": "", "language": "kuery"}, "filter": []}
                )
            },
        },
        "references": references,
    }


_CHAIN_COLUMNS: Final = [
    "mlwarden.chain.seq",
    "event.kind",
    "rule.name",
    "client.id",
    "mlwarden.model.id",
    "message",
]


def saved_objects() -> list[dict[str, Any]]:
    """Every object, referenced ones before those that reference them."""
    return [
        {
            "type": "index-pattern",
            "id": DATA_VIEW_ID,
            "attributes": {
                "title": "logs-mlwarden.evidence-*",
                "name": "mlwarden evidence",
                "timeFieldName": "@timestamp",
            },
            "references": [],
        },
        _search(
            INCIDENT_SEARCH_ID,
            "mlwarden: all evidence of incident X",
            "Every alert and query of one incident in chain order. Open it from the page's "
            'link, or replace the query with mlwarden.incident.id : "<incident id>".',
            "mlwarden.incident.id : *",
            _CHAIN_COLUMNS,
            "asc",
        ),
        _search(
            CLIENT_QUERIES_SEARCH_ID,
            "mlwarden: all queries of client Y",
            'The raw queries kept as evidence for one client: set client.id : "<client id>".',
            "event.kind : event and client.id : *",
            [
                "client.id",
                "mlwarden.model.id",
                "mlwarden.query.prediction",
                "mlwarden.incident.id",
                "message",
            ],
            "desc",
        ),
        _search(
            ALERTS_SEARCH_ID,
            "mlwarden: alerts",
            "Alerts that started or joined incidents, newest first.",
            "event.kind : alert",
            [
                "mlwarden.alert.severity",
                "rule.name",
                "rule.category",
                "client.id",
                "mlwarden.alert.score",
                "mlwarden.incident.id",
            ],
            "desc",
        ),
        _markdown(
            "mlwarden-evidence-oncall-help",
            "mlwarden: on-call notes",
            "**Incident evidence.** The page links to *all evidence of incident X*. "
            "Check the chain with `mlwarden evidence verify <incident id>` before acting on "
            "it; search from a shell with `mlwarden evidence search 'client.id:\"…\"'`.",
        ),
        _dashboard(
            ONCALL_DASHBOARD_ID,
            "mlwarden: on-call",
            "What fired, against whom, and the newest queries behind it.",
            [
                ("visualization", "mlwarden-evidence-oncall-help", 48, 5),
                ("search", ALERTS_SEARCH_ID, 48, 15),
                ("search", CLIENT_QUERIES_SEARCH_ID, 48, 15),
            ],
        ),
        _dashboard(
            POSTMORTEM_DASHBOARD_ID,
            "mlwarden: postmortem",
            'One incident end to end: set the query to mlwarden.incident.id : "<id>".',
            [
                ("search", INCIDENT_SEARCH_ID, 48, 20),
                ("search", ALERTS_SEARCH_ID, 48, 12),
                ("search", CLIENT_QUERIES_SEARCH_ID, 48, 15),
            ],
        ),
    ]


def ndjson() -> str:
    return "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in saved_objects())


def _kuery_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rison_string(value: str) -> str:
    return "'" + value.replace("!", "!!").replace("'", "!'") + "'"


def discover_url(kibana_url: str, search_id: str, kuery: str) -> str:
    """A Discover link opening saved search `search_id` with query `kuery`."""
    state = f"(query:(language:kuery,query:{_rison_string(kuery)}))"
    return (
        f"{kibana_url.rstrip('/')}/app/discover#/view/{search_id}"
        f"?_g=(time:(from:now-30d,to:now))&_a={quote(state, safe='(),:!*')}"
    )


def incident_url(kibana_url: str, incident_id: str) -> str:
    """Where the page's "evidence" link points: every document of the incident."""
    return discover_url(
        kibana_url, INCIDENT_SEARCH_ID, f"mlwarden.incident.id : {_kuery_string(incident_id)}"
    )


def client_queries_url(kibana_url: str, client_id: str) -> str:
    return discover_url(
        kibana_url,
        CLIENT_QUERIES_SEARCH_ID,
        f"event.kind : event and client.id : {_kuery_string(client_id)}",
    )


if __name__ == "__main__":
    Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(sys.argv[1]).write_text(ndjson())
