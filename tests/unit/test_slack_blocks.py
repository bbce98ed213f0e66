"""The Slack page message: what on-call reads, safe against hostile alert text."""

from __future__ import annotations

from typing import Any

from mlwarden.responders.base import IncidentChange
from mlwarden.responders.page import EvidenceLink, PageUpdate, page_for
from mlwarden.responders.slack import page_blocks, status_line
from mlwarden.responders.slack_approvals import APPROVAL_BLOCK_ID, APPROVE_ACTION_ID
from mlwarden.schemas.alert import Severity
from tests.contract_servers.incidents import make_alert, make_ctx

KIBANA = EvidenceLink("https://kibana.example")


def texts(blocks: list[dict[str, Any]]) -> str:
    """Every text of the message, as one string."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def test_the_message_shows_what_fired_where_and_how_badly() -> None:
    page = page_for(make_alert(), make_ctx(), "scraper on fraud-scorer", evidence=KIBANA)
    blocks = page_blocks(page, status=status_line(None))
    shown = texts(blocks)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "CRITICAL · extraction on fraud-scorer"},
    }
    for expected in (
        ":red_circle: scraper on fraud-scorer",
        "*Model*\nfraud-scorer v3",
        "*Client*\nc-scraper-01",
        "*Score*\n0.971 (threshold 0.9)",
        "*Detector*\nprada",
        "*Incident*\nfp-1",
        ":rotating_light: *Firing*",
    ):
        assert expected in shown
    [link] = [b for b in blocks if b.get("block_id") == "mlwarden.links"]
    assert link["elements"][0]["url"] == page.evidence_url
    assert "mlwarden.incident.id" in str(page.evidence_url)
    assert not [b for b in blocks if b.get("block_id") == APPROVAL_BLOCK_ID]


def test_alert_text_cannot_ping_the_channel_or_forge_links() -> None:
    alert = make_alert(client_id="<!channel>", model_version="<https://evil|3>")
    page = page_for(alert, make_ctx(alert), "look <!here> & <@U123>")
    shown = texts(page_blocks(page, status=status_line(None)))
    assert "<!" not in shown
    assert "<http" not in shown
    assert "&lt;!channel&gt;" in shown
    assert "look &lt;!here&gt; &amp; &lt;@U123&gt;" in shown


def test_long_text_is_cut_to_block_kit_limits() -> None:
    alert = make_alert(model_id="m" * 300)
    page = page_for(alert, make_ctx(alert), "x" * 5000)
    blocks = page_blocks(page, status=status_line(None))
    assert len(blocks[0]["text"]["text"]) == 150
    assert len(blocks[1]["text"]["text"]) == 3000


def test_a_step_waiting_for_approval_gets_buttons_until_resolved() -> None:
    page = page_for(make_alert(), make_ctx(), "roll back?", approval_step="rollback")
    [actions] = [b for b in page_blocks(page, status="s") if b.get("block_id") == APPROVAL_BLOCK_ID]
    approve, reject = actions["elements"]
    assert approve["action_id"] == APPROVE_ACTION_ID
    assert approve["value"] == '{"incident_id":"fp-1","step":"rollback"}'
    assert (approve["style"], reject["style"]) == ("primary", "danger")
    without = page_blocks(page, status="s", buttons=False)
    assert not [b for b in without if b.get("block_id") == APPROVAL_BLOCK_ID]


def test_status_lines_follow_the_incident() -> None:
    page = page_for(make_alert(), make_ctx(), "m")
    latest = page_for(make_alert(3), make_ctx(), "m3", severity=Severity.CRITICAL)
    repeat = PageUpdate(IncidentChange.REPEAT, page, latest, 3)
    assert status_line(repeat) == (
        ":rotating_light: *Firing* · 3 alert(s) · latest 2026-11-23 14:07:00 UTC"
    )
    acked = PageUpdate(IncidentChange.ACKNOWLEDGED, page, latest, 3)
    assert status_line(acked).startswith(":eyes: *Acknowledged* · 3 alert(s)")
    resolved = PageUpdate(IncidentChange.RESOLVED, page, latest, 3)
    assert status_line(resolved) == ":white_check_mark: *Resolved* · 3 alert(s)"
