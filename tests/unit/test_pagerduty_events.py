"""What a page becomes in PagerDuty: a valid Events API v2 trigger with a stable dedup key."""

from __future__ import annotations

from mlwarden.responders.page import EvidenceLink, page_for
from mlwarden.responders.pagerduty import dedup_key_for, trigger_event
from mlwarden.schemas.alert import Severity
from tests.contract_servers.incidents import make_alert, make_ctx
from tests.contract_servers.pagerduty import _problems


def test_the_trigger_carries_the_triage_facts_and_the_evidence_link() -> None:
    page = page_for(
        make_alert(), make_ctx(), "scraper", evidence=EvidenceLink("https://kibana.example")
    )
    event = trigger_event(page, "fp-1/extraction/1")
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "fp-1/extraction/1"
    payload = event["payload"]
    assert payload["summary"] == "scraper"
    assert payload["severity"] == "critical"
    assert payload["source"] == "model:fraud-scorer"
    assert payload["component"] == "fraud-scorer@3"
    assert payload["class"] == "extraction/prada"
    assert payload["group"] == "extraction"
    assert payload["timestamp"] == "2026-11-23T14:05:00+00:00"
    assert payload["custom_details"]["client_id"] == "c-scraper-01"
    assert payload["custom_details"]["threshold"] == 0.9
    assert event["links"] == [{"href": page.evidence_url, "text": "Evidence in Kibana"}]
    assert "routing_key" not in event
    assert _problems({**event, "routing_key": "r" * 32}) == []


def test_warning_and_info_map_to_pagerduty_severities() -> None:
    for severity in (Severity.WARNING, Severity.INFO):
        page = page_for(make_alert(), make_ctx(), "m", severity=severity)
        assert trigger_event(page, "k")["payload"]["severity"] == severity.value


def test_long_summaries_are_cut_to_1024_characters() -> None:
    page = page_for(make_alert(), make_ctx(), "x" * 5000)
    assert len(trigger_event(page, "k")["payload"]["summary"]) == 1024


def test_dedup_keys_over_255_characters_are_hashed_stably() -> None:
    assert dedup_key_for("short") == "short"
    long_key = "fp-" + "x" * 300
    hashed = dedup_key_for(long_key)
    assert len(hashed) <= 255
    assert hashed == dedup_key_for(long_key)
    assert hashed != dedup_key_for(long_key + "y")


def test_an_approval_page_says_how_to_decide() -> None:
    page = page_for(make_alert(), make_ctx(), "m", approval_step="rollback")
    details = trigger_event(page, "k")["payload"]["custom_details"]
    assert "mlwarden incidents approve fp-1" in details["approval"]
