"""Playbook models: matching rules, the one-key step structure, templates against real alerts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from mlwarden.playbooks.model import Match, Playbook, Step, severity_rank
from mlwarden.playbooks.steps import render_params
from mlwarden.playbooks.templates import TemplateRenderError
from mlwarden.responders.params import PageParams, RateLimitParams
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
        ({"kinds": ["abuse"], "detectors": ["prada"]}, {}, False),
        ({"kinds": ["abuse"], "model_id": "fraud-*"}, {}, True),
        ({"kinds": ["abuse"], "model_id": "Fraud-*"}, {}, False),
        ({"kinds": ["abuse"], "model_version": "3"}, {}, True),
        ({"kinds": ["abuse"], "client_id": "c-*"}, {"client_id": None}, False),
        ({"kinds": ["abuse"], "client_id": "c-4?"}, {}, True),
        (
            {"kinds": ["abuse"], "labels": {"pattern": "syb*"}},
            {"labels": {"pattern": "sybil"}},
            True,
        ),
        ({"kinds": ["abuse"], "labels": {"pattern": "sybil"}}, {}, False),
        ({"kinds": ["abuse"], "condition": "score > `100`"}, {}, True),
        ({"kinds": ["abuse"], "condition": "score > `1000`"}, {}, False),
        ({"kinds": ["abuse"], "condition": "evidence.queries_in_window > 'x'"}, {}, False),
        ({"kinds": ["abuse"], "condition": "labels.pattern != 'sybil'"}, {}, True),
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
        ({"page": {"message": "x"}, "rollback_model": {}}, "found page, rollback_model"),
        ({"when": "x"}, "found keys: when"),
        ({"pgae": {"message": "x"}}, "unknown step type 'pgae' (did you mean 'page'?)"),
        ("page", "a step is a mapping with one step type"),
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
    step = Step.model_validate({"page": {"message": "x"}})
    with pytest.raises(ValidationError):
        step.when = "y"


def test_step_options_and_defaults() -> None:
    step = Step.model_validate(
        {
            "rate_limit": {"action": "block"},
            "when": "alert.score > `1`",
            "timeout": "5s",
            "retries": 4,
            "on_failure": "abort",
        }
    )
    assert step.step_type == "rate_limit"
    assert step.retries == 4
    assert step.deadline_after().total_seconds() == 5
    approval = Step.model_validate({"require_approval": None})
    assert approval.deadline_after().total_seconds() == 3600
    assert Step.model_validate({"snapshot_evidence": None}).step_type == "snapshot_evidence"
    assert Step.model_validate({"wait": "5m"}).params.total_seconds() == 300  # type: ignore[union-attr]


def test_templates_render_alert_fields_and_evidence() -> None:
    params = PageParams(
        message="{{ alert.client_id }} {{ alert.score | int }} "
        "{{ alert.evidence.queries_in_window }}"
    )
    assert render_params(params, make_alert()) == PageParams(message="c-42 180 30")


def test_rendered_params_are_validated_again() -> None:
    params = RateLimitParams(action="block", client_id="{{ alert.client_id }}")  # type: ignore[arg-type]
    assert render_params(params, make_alert()).client_id == "c-42"  # type: ignore[attr-defined]
    empty = PageParams(message="{{ alert.evidence.empty }}")
    with pytest.raises(ValidationError):
        render_params(empty, make_alert(evidence={"empty": ""}))


def test_a_template_valid_at_load_can_still_fail_on_a_real_alert() -> None:
    params = Step.model_validate({"page": {"message": "{{ alert.evidence.missing_key }}"}})
    with pytest.raises(TemplateRenderError, match="missing_key"):
        render_params(params.params, make_alert())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    ["{{ alert.__class__ }}", "{{ 'x' * 100000 }}", "{{ 2 ** 1000 }}", "{{ 1 / 0 }}"],
)
def test_unsafe_or_broken_templates_fail_at_load(template: str) -> None:
    with pytest.raises(ValidationError, match="template"):
        Step.model_validate({"page": {"message": template}})


def test_json_schema_lists_every_step_type() -> None:
    schema = Playbook.model_json_schema()
    step = schema["$defs"]["Step"]
    assert {
        "rate_limit",
        "snapshot_evidence",
        "rollback_model",
        "page",
        "notify",
        "wait",
        "require_approval",
        "when",
        "timeout",
        "retries",
        "on_failure",
    } <= set(step["properties"])
