"""Ground truth of one simulated run: who attacked, from when, and what should have fired.

Written next to the telemetry (`x.jsonl` → `x.truth.json`) so a benchmark or a test scores a
backtest's alerts against it without knowing how the run was generated. It is a simulator
artifact, not a platform contract, so it lives here rather than in `schemas/`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from mlwarden.schemas.alert import AlertKind

TRUTH_FORMAT: Final = 1


class AlertScope(StrEnum):
    """Where a correct alert points: at the attacking clients, at the model, or nowhere."""

    CLIENT = "client"
    MODEL = "model"
    NONE = "none"


class ModelVersionTruth(BaseModel):
    """One model version the run served, and how good it was on held-out natural digits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    serving_from_ts: float
    training_seed: int
    poisoning: str | None = Field(description="How the training labels were poisoned, if so.")
    holdout_accuracy: float
    holdout_mean_top1: float


class GroundTruth(BaseModel):
    """Everything a scorer needs to say whether a detector caught the scenario."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    truth_format: int = TRUTH_FORMAT
    scenario: str
    summary: str
    seed: int
    model_id: str
    start_ts: float
    end_ts: float
    attack_kind: str | None = Field(description="e.g. extraction, evasion, drift; null: control.")
    attack_start_ts: float | None = Field(
        description="When the attack, drift or bad rollout begins; null for the benign controls."
    )
    attacker_client_ids: list[str]
    expected_alert_kinds: list[AlertKind] = Field(
        description="An alert of any of these kinds, in `alert_scope`, counts as a detection."
    )
    alert_scope: AlertScope
    model_versions: list[ModelVersionTruth]
    events: int
    attacker_events: int
    benign_clients: int
    references: list[str]
    parameters: dict[str, str | float | int]


def truth_path(telemetry: Path) -> Path:
    """Where the ground truth of `telemetry` lives: `x.jsonl` → `x.truth.json`."""
    return telemetry.with_name(f"{telemetry.stem}.truth.json")


def load_truth(telemetry_or_truth: Path) -> GroundTruth:
    """Read the ground truth of a telemetry file (or the truth file itself)."""
    path = (
        telemetry_or_truth
        if telemetry_or_truth.name.endswith(".truth.json")
        else truth_path(telemetry_or_truth)
    )
    return GroundTruth.model_validate_json(path.read_bytes())
