"""Playbook models: matching rules, the one-key step structure, templates against real alerts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from mlwarden.playbooks.model import Match, PageParams, Playbook, Step, severity_rank
from mlwarden.playbooks.templates import TemplateRenderError
from mlwarden.schemas.alert import Alert, AlertKind, Severity

T = datetime(2026, 11, 23, 14, 5, tzinfo=UTC)


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "fp-1",
        "kind": AlertKind.ABUSE,
        "detector": "query_budget",
        "severity": Severity.WARNING,
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": "c-42",
        "detected_at": T,
        "emitted_at": T,
        "score": 180.0,
        "threshold": 60.0,
        "summary": "client c-42 sent 30 queries",
        "evidence": {"queries_in_window": 30},
    }
    return Alert(**(fields | changes))


def test_severity_order_is_info_warning_critical() -> None:
    ranks = [severity_rank(s) for s in (Severity.INFO, Severity.WARNING, Severity.CRITICAL)]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == 3


@pytest.mark.parametrize(
    ("match", "alert_changes", "expected"),
    [
        ({"kinds": ["abuse"]}, {}, True),
        ({"kinds": ["drift"]}, {}, False),
        ({"kinds": ["abuse"], "detectors": ["query_budget"]}, {}, True),
        ({"kinds": ["abuse"], "detectors": ["other"]}, {}, False),
        ({"kinds": ["abuse"], "min_severity": "warning"}, {}, True),
        ({"kinds": ["abuse"], "min_severity": "critical"}, {}, False),
        ({"kinds": ["abuse"], "min_severity": "info"}, {"severity": "info"}, True),
        ({"kinds": ["abuse"], "min_severity": "warning"}, {"severity": "info"}, False),
        ({"kinds": ["abuse"], "min_severity": "warning"}, {"severity": "critical"}, True),
    ],
)
def test_match(match: dict[str, Any], alert_changes: dict[str, Any], expected: bool) -> None:
    assert Match.model_validate(match).matches(make_alert(**alert_changes)) is expected


def test_empty_kinds_and_empty_detectors_are_refused() -> None:
    with pytest.raises(ValidationError):
        Match.model_validate({"kinds": []})
    with pytest.raises(ValidationError):
        Match.model_validate({"kinds": ["abuse"], "detectors": []})


def test_a_step_exposes_its_type_and_params() -> None:
    step = Step.model_validate({"page": {"message": "hi", "severity": "critical"}})
    assert step.step_type == "page"
    assert step.params == PageParams(message="hi", severity=Severity.CRITICAL)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({}, "found keys: nothing"),
        ({"page": {"message": "x"}, "rollback_model": {}}, "found keys: page, rollback_model"),
        ({"pgae": {"message": "x"}}, "unknown step type 'pgae' (did you mean 'page'?)"),
        ("page", "a step is a one-key mapping"),
    ],
)
def test_malformed_steps_are_refused(raw: Any, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        Step.model_validate(raw)


def test_playbook_names_cannot_break_idempotency_keys() -> None:
    base = {"match": {"kinds": ["abuse"]}, "steps": [{"page": {"message": "x"}}]}
    with pytest.raises(ValidationError, match="idempotency key"):
        Playbook.model_validate(base | {"name": "a/b"})
    assert Playbook.model_validate(base | {"name": "abuse-1.v2_x"}).name == "abuse-1.v2_x"


def test_models_are_frozen() -> None:
    params = PageParams(message="x")
    with pytest.raises(ValidationError):
        params.message = "y"


def test_templates_render_alert_fields_and_evidence() -> None:
    params = PageParams(
        message="{{ alert.client_id }} {{ alert.score | int }} "
        "{{ alert.evidence.queries_in_window }}"
    )
    assert params.render(make_alert()) == "c-42 180 30"


def test_a_template_valid_at_load_can_still_fail_on_a_real_alert() -> None:
    params = PageParams(message="{{ alert.evidence.missing_key }}")  # every key exists at load
    with pytest.raises(TemplateRenderError, match="missing_key"):
        params.render(make_alert())


@pytest.mark.parametrize(
    "template",
    ["{{ alert.__class__ }}", "{{ 'x' * 100000 }}", "{{ 2 ** 1000 }}", "{{ 1 / 0 }}"],
)
def test_unsafe_or_broken_templates_fail_at_load(template: str) -> None:
    with pytest.raises(ValidationError, match="template"):
        PageParams(message=template)


def test_json_schema_says_a_step_has_exactly_one_key() -> None:
    schema = Playbook.model_json_schema()
    step = schema["$defs"]["Step"]
    assert step["minProperties"] == step["maxProperties"] == 1
    assert set(step["properties"]) == {"page"}
