"""Every detector by its registry name: the one place config and playbooks look names up.

Adding a detector = one module, one entry here, one field in `DetectorSuiteConfig`.
The conformance suite runs over `DETECTORS`, so a new entry is tested like every other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlwarden.detectors.base import Detector
from mlwarden.detectors.blacklight import BlacklightConfig, BlacklightDetector
from mlwarden.detectors.boundary_probing import BoundaryProbingConfig, BoundaryProbingDetector
from mlwarden.detectors.class_coverage import ClassCoverageConfig, ClassCoverageDetector
from mlwarden.detectors.confidence_shift import ConfidenceShiftConfig, ConfidenceShiftDetector
from mlwarden.detectors.evasion_campaign import EvasionCampaignConfig, EvasionCampaignDetector
from mlwarden.detectors.feature_drift import FeatureDriftConfig, FeatureDriftDetector
from mlwarden.detectors.mmd_drift import MMDDriftConfig, MMDDriftDetector
from mlwarden.detectors.ood_queries import OodQueriesConfig, OodQueriesDetector
from mlwarden.detectors.pipeline import DetectorPipeline
from mlwarden.detectors.prada import PradaConfig, PradaDetector
from mlwarden.detectors.prediction_drift import PredictionDriftConfig, PredictionDriftDetector
from mlwarden.detectors.query_budget import QueryBudgetConfig, QueryBudgetDetector
from mlwarden.detectors.sybil_steps import SybilStepsConfig, SybilStepsDetector

DETECTORS: Final[Mapping[str, type[Detector]]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            QueryBudgetDetector,
            PredictionDriftDetector,
            ConfidenceShiftDetector,
            PradaDetector,
            BlacklightDetector,
            BoundaryProbingDetector,
            ClassCoverageDetector,
            EvasionCampaignDetector,
            FeatureDriftDetector,
            MMDDriftDetector,
            OodQueriesDetector,
            SybilStepsDetector,
        )
    }
)


class DetectorSuiteConfig(BaseModel):
    """Which detectors run, and each one's configuration under its registry name."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] = Field(default_factory=lambda: list(DETECTORS))
    query_budget: QueryBudgetConfig = Field(default_factory=QueryBudgetConfig)
    prediction_drift: PredictionDriftConfig = Field(default_factory=PredictionDriftConfig)
    confidence_shift: ConfidenceShiftConfig = Field(default_factory=ConfidenceShiftConfig)
    prada: PradaConfig = Field(default_factory=PradaConfig)
    blacklight: BlacklightConfig = Field(default_factory=BlacklightConfig)
    boundary_probing: BoundaryProbingConfig = Field(default_factory=BoundaryProbingConfig)
    class_coverage: ClassCoverageConfig = Field(default_factory=ClassCoverageConfig)
    evasion_campaign: EvasionCampaignConfig = Field(default_factory=EvasionCampaignConfig)
    feature_drift: FeatureDriftConfig = Field(default_factory=FeatureDriftConfig)
    mmd_drift: MMDDriftConfig = Field(default_factory=MMDDriftConfig)
    ood_queries: OodQueriesConfig = Field(default_factory=OodQueriesConfig)
    sybil_steps: SybilStepsConfig = Field(default_factory=SybilStepsConfig)
    baseline_file: Path | None = Field(
        default=None,
        description="Per-model-version baselines fitted by `mlwarden baseline fit`: listed "
        "versions are tested from their first event; others learn online.",
    )

    @field_validator("enabled")
    @classmethod
    def _known_names(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(DETECTORS)}")
        return names


def create_detector(name: str, suite: DetectorSuiteConfig) -> Detector:
    """A fresh detector `name` configured from `suite`."""
    detector_class = DETECTORS[name]
    config = getattr(suite, name)
    return detector_class(config)  # type: ignore[call-arg]


def build_pipeline(
    suite: DetectorSuiteConfig | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DetectorPipeline:
    """The pipeline the worker, backtest and tests all run."""
    suite = suite or DetectorSuiteConfig()
    pipeline = DetectorPipeline(
        {name: create_detector(name, suite) for name in suite.enabled}, clock
    )
    if suite.baseline_file is not None:
        pipeline.install_baseline_file(suite.baseline_file, DETECTORS)
    return pipeline
