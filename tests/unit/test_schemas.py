"""The committed JSON Schemas are exactly what the models generate; contract validators hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlwarden.schemas.control import ControlAction, ControlDecision
from mlwarden.schemas.export import COMMITTED_DIR, export_schemas, render_schemas


def test_committed_json_schemas_match_the_models() -> None:
    rendered = render_schemas()
    committed = {
        path.name: path.read_text(encoding="utf-8") for path in COMMITTED_DIR.glob("*.json")
    }
    assert committed == rendered, (
        "schemas/json is stale: run `mlwarden schema export schemas/json` and commit the result"
    )


def test_export_writes_every_contract(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(render_schemas())


NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_control_decisions_must_lapse_and_carry_their_limit() -> None:
    ok = ControlDecision(
        client_id="c",
        action=ControlAction.THROTTLE,
        limit_per_minute=10,
        decided_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        reason="r",
    )
    assert ok.limit_per_minute == 10
    with pytest.raises(ValidationError, match="needs limit_per_minute"):
        ControlDecision(
            client_id="c",
            action=ControlAction.THROTTLE,
            decided_at=NOW,
            expires_at=NOW + timedelta(hours=1),
            reason="r",
        )
    with pytest.raises(ValidationError, match="must lapse"):
        ControlDecision(client_id="c", action=ControlAction.BLOCK, decided_at=NOW, reason="r")
    with pytest.raises(ValidationError, match="after decided_at"):
        ControlDecision(
            client_id="c", action=ControlAction.BLOCK, decided_at=NOW, expires_at=NOW, reason="r"
        )
    lift = ControlDecision(client_id="c", action=ControlAction.LIFT, decided_at=NOW, reason="r")
    assert lift.expires_at is None
