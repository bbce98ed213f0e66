"""Every golden stream, by the registry name of the detector it is for."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from tests.golden import per_client, per_model
from tests.golden.spec import Scenario

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        scenario.detector: scenario
        for scenario in (
            per_client.QUERY_BUDGET,
            per_model.PREDICTION_DRIFT,
            per_model.CONFIDENCE_SHIFT,
            per_client.PRADA,
            per_client.BLACKLIGHT,
            per_client.BOUNDARY_PROBING,
            per_client.CLASS_COVERAGE,
            per_model.EVASION_CAMPAIGN,
            per_model.FEATURE_DRIFT,
            per_model.MMD_DRIFT,
            per_client.OOD_QUERIES,
            per_client.SYBIL_STEPS,
        )
    }
)
