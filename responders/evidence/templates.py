"""Elasticsearch templates and ILM policy for evidence, generated from the field table.

`deploy/elasticsearch/*.json` are these objects written out (`python -m
mlwarden.responders.evidence.templates deploy/elasticsearch`); a test fails when the committed
files differ, so the mapping, the SQLite translation and the files cannot drift apart.
`mlwarden evidence setup` installs the objects from here, not from the files.

Searchable fields get explicit types; the alert's evidence numbers and the raw features and
probabilities are kept in `_source` but not indexed (`enabled: false`), since their shapes
differ per detector and model and would otherwise fight over dynamic mappings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from mlwarden.responders.evidence.fields import FIELDS, KEYWORD_OBJECTS, FieldType

ILM_POLICY: Final = "mlwarden-evidence"
MAPPINGS_COMPONENT: Final = "mlwarden-evidence@mappings"
SETTINGS_COMPONENT: Final = "mlwarden-evidence@settings"
INDEX_TEMPLATE: Final = "mlwarden-evidence"
INDEX_PATTERN: Final = "logs-mlwarden.evidence-*"

_ES_TYPES: Final[dict[FieldType, dict[str, Any]]] = {
    FieldType.KEYWORD: {"type": "keyword", "ignore_above": 1024},
    FieldType.TEXT: {"type": "text"},
    FieldType.DATE: {"type": "date"},
}
_NUMBER_TYPES: Final = {
    "mlwarden.chain.seq": "long",
    "mlwarden.snapshot.index": "integer",
    "mlwarden.snapshot.size": "integer",
}


def _put(properties: dict[str, Any], path: list[str], mapping: dict[str, Any]) -> None:
    head, *rest = path
    if not rest:
        properties[head] = mapping
        return
    node = properties.setdefault(head, {"properties": {}})
    _put(node["properties"], rest, mapping)


def mappings() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in FIELDS.values():
        if field.type is FieldType.NUMBER:
            mapping: dict[str, Any] = {"type": _NUMBER_TYPES.get(field.name, "double")}
        else:
            mapping = dict(_ES_TYPES[field.type])
        _put(properties, list(field.path), mapping)
    for prefix in KEYWORD_OBJECTS:
        _put(properties, prefix.split("."), {"type": "object", "dynamic": True})
    _put(properties, ["mlwarden", "alert", "summary"], {"type": "text"})
    _put(properties, ["mlwarden", "note"], {"type": "text"})
    _put(properties, ["event", "module"], {"type": "keyword"})
    _put(properties, ["event", "category"], {"type": "keyword"})
    for name in ("vendor", "product", "type"):
        _put(properties, ["observer", name], {"type": "keyword"})
    for disabled in (["mlwarden", "alert", "evidence"], ["mlwarden", "query", "raw"]):
        _put(properties, disabled, {"type": "object", "enabled": False})
    return {
        "dynamic_templates": [
            {
                "strings_as_keywords": {
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": properties,
    }


def mappings_component() -> dict[str, Any]:
    return {
        "template": {"mappings": mappings()},
        "_meta": {"managed_by": "mlwarden", "description": "ECS + mlwarden.* evidence fields"},
    }


def settings_component(*, ilm: bool = True) -> dict[str, Any]:
    settings: dict[str, Any] = {"number_of_shards": 1}
    if ilm:
        settings["index.lifecycle.name"] = ILM_POLICY
    return {"template": {"settings": settings}, "_meta": {"managed_by": "mlwarden"}}


def index_template(*, data_stream: bool = True) -> dict[str, Any]:
    template: dict[str, Any] = {
        "index_patterns": [INDEX_PATTERN],
        "composed_of": [MAPPINGS_COMPONENT, SETTINGS_COMPONENT],
        # Above the built-in `logs-*-*` template (priority 100), which would otherwise win.
        "priority": 200,
        "_meta": {"managed_by": "mlwarden", "description": "mlwarden incident evidence"},
    }
    if data_stream:
        template["data_stream"] = {}
    return template


def ilm_policy() -> dict[str, Any]:
    """Hot with rollover; deleted after a year (edit the delete phase to your retention)."""
    return {
        "policy": {
            "_meta": {"managed_by": "mlwarden"},
            "phases": {
                "hot": {
                    "actions": {"rollover": {"max_primary_shard_size": "50gb", "max_age": "30d"}}
                },
                "warm": {"min_age": "30d", "actions": {"forcemerge": {"max_num_segments": 1}}},
                "delete": {"min_age": "365d", "actions": {"delete": {}}},
            },
        }
    }


def files() -> dict[str, dict[str, Any]]:
    """The deploy/elasticsearch file name → content of each object."""
    return {
        f"component_template.{MAPPINGS_COMPONENT}.json": mappings_component(),
        f"component_template.{SETTINGS_COMPONENT}.json": settings_component(),
        f"index_template.{INDEX_TEMPLATE}.json": index_template(),
        f"ilm_policy.{ILM_POLICY}.json": ilm_policy(),
    }


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def main(directory: str) -> None:
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files().items():
        (target / name).write_text(render(content))


if __name__ == "__main__":
    main(sys.argv[1])
