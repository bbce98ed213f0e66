"""The names of the scenarios, importable without torch or scikit-learn.

The command line lists these as the choices of `mlwarden simulate`; importing the simulator
itself costs seconds (torch, scikit-learn), which `mlwarden --help` should not pay.
`scenarios.SCENARIOS` has exactly one entry per name (a unit test holds them together).
"""

from __future__ import annotations

from enum import StrEnum


class ScenarioName(StrEnum):
    BENIGN = "benign"
    BENIGN_ROLLOUT = "benign-rollout"
    EXTRACTION_JACOBIAN = "extraction-jacobian"
    EXTRACTION_RANDOM = "extraction-random"
    EXTRACTION_NATURAL_OOD = "extraction-natural-ood"
    BOUNDARY_PROBING = "boundary-probing"
    SYBIL_EXTRACTION = "sybil-extraction"
    DRIFT_SUDDEN = "drift-sudden"
    DRIFT_GRADUAL = "drift-gradual"
    EVASION = "evasion"
    POISONED_ROLLOUT = "poisoned-rollout"
