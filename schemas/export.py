"""JSON Schema files generated from the contract models: the only copy users ever read.

`mlwarden schema export DIR` writes them; a test fails when the committed files in
`schemas/json/` differ from what the models generate, so the two never drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from mlwarden.schemas.action import ActionRecord
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.control import ControlDecision
from mlwarden.schemas.dead_letter import DeadLetter
from mlwarden.schemas.incident import EngineCommand, IncidentSummary
from mlwarden.schemas.telemetry import TelemetryRecord

CONTRACTS: Final[dict[str, type[BaseModel]]] = {
    "telemetry.v1": TelemetryRecord,
    "alert": Alert,
    "action": ActionRecord,
    "control": ControlDecision,
    "dead_letter": DeadLetter,
    "incident": IncidentSummary,
    "command": EngineCommand,
}


def _playbook_model() -> type[BaseModel]:
    """The playbook schema's model (imported late: schemas/ must not import playbooks/ at
    import time, since playbooks/ builds on schemas/)."""
    from mlwarden.playbooks.model import Playbook

    return Playbook


COMMITTED_DIR: Final = Path(__file__).parent / "json"


def render_schemas() -> dict[str, str]:
    """File name → JSON text, deterministic (sorted keys, trailing newline)."""
    rendered: dict[str, str] = {}
    for name, model in {**CONTRACTS, "playbook": _playbook_model()}.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://mlwarden.dev/schemas/{name}.json"
        rendered[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def export_schemas(directory: Path) -> list[Path]:
    """Write every contract's JSON Schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
