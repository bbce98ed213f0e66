"""deploy/elasticsearch and deploy/kibana are generated from code and agree with the field table."""

from __future__ import annotations

import json
from pathlib import Path

from mlwarden.responders.evidence import kibana, templates
from mlwarden.responders.evidence.fields import FIELDS, FieldType

ROOT = Path(__file__).resolve().parents[2]


def test_committed_elasticsearch_files_are_current() -> None:
    directory = ROOT / "deploy" / "elasticsearch"
    expected = templates.files()
    assert sorted(p.name for p in directory.glob("*.json")) == sorted(expected)
    for name, content in expected.items():
        assert (directory / name).read_text() == templates.render(content), (
            f"{name} is stale: "
            "python -m mlwarden.responders.evidence.templates deploy/elasticsearch"
        )


def test_committed_kibana_objects_are_current_and_valid_ndjson() -> None:
    text = (ROOT / "deploy" / "kibana" / "saved_objects.ndjson").read_text()
    assert text == kibana.ndjson(), (
        "stale: python -m mlwarden.responders.evidence.kibana deploy/kibana/saved_objects.ndjson"
    )
    objects = [json.loads(line) for line in text.splitlines()]
    ids = {(o["type"], o["id"]) for o in objects}
    assert {o["type"] for o in objects} == {"index-pattern", "search", "visualization", "dashboard"}
    for obj in objects:  # every reference resolves inside the file
        for reference in obj["references"]:
            assert (reference["type"], reference["id"]) in ids, reference
        if obj["type"] == "dashboard":
            panels = json.loads(obj["attributes"]["panelsJSON"])
            names = {r["name"] for r in obj["references"]}
            assert {p["panelRefName"] for p in panels} == names
        if obj["type"] == "search":
            source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert source["indexRefName"] in {r["name"] for r in obj["references"]}


def test_every_searchable_field_has_its_type_in_the_mapping() -> None:
    properties = templates.mappings()["properties"]
    es_types = {
        FieldType.KEYWORD: {"keyword"},
        FieldType.TEXT: {"text"},
        FieldType.DATE: {"date"},
        FieldType.NUMBER: {"double", "long", "integer"},
    }
    for field in FIELDS.values():
        node = properties[field.path[0]]
        for part in field.path[1:]:
            node = node["properties"][part]
        assert node["type"] in es_types[field.type], field.name


def test_the_incident_link_opens_the_saved_search_with_the_incident() -> None:
    url = kibana.incident_url("https://kibana.example/", 'fp-1"x')
    assert url.startswith("https://kibana.example/app/discover#/view/mlwarden-evidence-incident?")
    assert "mlwarden.incident.id%20:%20%22fp-1%5C%22x%22" in url


def test_the_data_stream_template_outranks_the_builtin_logs_template() -> None:
    template = templates.index_template()
    assert template["priority"] > 100
    assert "data_stream" in template
    assert "data_stream" not in templates.index_template(data_stream=False)
    assert (
        "index.lifecycle.name"
        not in templates.settings_component(ilm=False)["template"]["settings"]
    )
