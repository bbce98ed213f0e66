"""Rollout regression: a new model version's baseline against its predecessor's.

Each version learns its own baseline, so a rollout never trips the within-version drift tests;
that is what keeps a benign rollout silent. A rollout that made the model *worse* must still
page someone, so when a version freezes its baseline the detector that learned it compares it
with the most recently frozen other version of the same model, using the test and the
calibrated level it already uses for drift. Both samples are finite, so both tests are
two-sample tests, and both baselines are cluster samples of client sessions, so both tests
use the clustered (Rao-Scott / cluster standard error) versions of `drift_stats`. A floor on
the effect size keeps a statistically significant but negligible change (large baselines
detect anything) from paging at critical severity.

The check lives in the detectors that learn the baselines (prediction_drift: class mix;
confidence_shift: top-1, entropy, margin) rather than in a third detector, which would have
to learn both baselines again and re-derive thresholds from the other detectors' configs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlwarden.detectors.base import incident_fingerprint, new_alert
from mlwarden.detectors.drift_stats import (
    ClientCounts,
    Summary,
    chi_square_homogeneity,
    chi_square_limit,
    psi,
    rao_scott,
    sig,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

ROLLOUT_LABELS = {"rollout": "regression"}
_SHOWN_CLASSES = 10


@dataclass(frozen=True, slots=True)
class Regression:
    """What a regressed rollout alert says: the numbers are filled in by the check."""

    score: float
    threshold: float
    summary: str
    evidence: dict[str, Any]


def class_shares(
    reference: Mapping[str, int], current: Mapping[str, int], names: tuple[str, str]
) -> list[dict[str, Any]]:
    """The classes whose share moved most, largest change first (evidence, summaries)."""
    ref_total, cur_total = max(1, sum(reference.values())), max(1, sum(current.values()))
    rows = [
        (label, reference.get(label, 0) / ref_total, current.get(label, 0) / cur_total)
        for label in set(reference) | set(current)
    ]
    rows.sort(key=lambda row: (-abs(row[2] - row[1]), row[0]))
    return [
        {"class": label, names[0]: sig(p, 4), names[1]: sig(q, 4)}
        for label, p, q in rows[:_SHOWN_CLASSES]
    ]


def class_mix_regression(
    previous: Mapping[str, int],
    new: Mapping[str, int],
    *,
    alpha: float,
    min_expected: float,
    min_psi: float,
    previous_clients: ClientCounts | None = None,
    new_clients: ClientCounts | None = None,
) -> Regression | None:
    """The predicted-class mix changed: chi-square homogeneity at `alpha` and PSI >= `min_psi`.

    Given both baselines' per-client counts, the chi-square is Rao-Scott corrected.
    """
    test = chi_square_homogeneity(previous, new, min_expected)
    if previous_clients and new_clients:
        test = rao_scott(test, previous_clients, new_clients)
    stability = psi(previous, new)
    if test.p_value >= alpha or stability < min_psi:
        return None
    shares = class_shares(previous, new, ("previous_share", "new_share"))
    top = shares[0]
    return Regression(
        score=sig(test.statistic),
        threshold=sig(chi_square_limit(alpha, test.dof)),
        summary=(
            f"class {top['class']!r} {top['previous_share']:.1%} -> {top['new_share']:.1%} "
            f"(chi-square {test.statistic:.1f} on {test.dof} dof, p={test.p_value:.2g} "
            f"< {alpha:.2g}; PSI {stability:.3f})"
        ),
        evidence={
            "statistic": "predicted_class_distribution",
            "test": "chi_square_homogeneity_rao_scott",
            "chi_square": sig(test.statistic),
            "raw_chi_square": sig(test.raw_statistic),
            "design_effect": sig(test.design_effect, 4),
            "dof": test.dof,
            "p_value": sig(test.p_value, 4),
            "alpha": sig(alpha, 4),
            "psi": sig(stability, 4),
            "min_psi": min_psi,
            "previous_baseline_size": sum(previous.values()),
            "new_baseline_size": sum(new.values()),
            "classes": shares,
        },
    )


def confidence_regression(
    previous: Summary,
    new: Summary,
    *,
    names: Sequence[str],
    worse: Sequence[float],
    z_limit: float,
    min_effect_sigmas: float,
) -> Regression | None:
    """Some statistic moved in its `worse` direction (+1 up, -1 down) beyond `z_limit`.

    z of a difference of two means, each with its own (clustered) standard error; the change
    must also be at least `min_effect_sigmas` of the previous version's standard deviation.
    """
    rows: dict[str, dict[str, Any]] = {}
    regressed: list[tuple[float, str]] = []
    for i, name in enumerate(names):
        difference = new.mean[i] - previous.mean[i]
        standard_error = math.hypot(previous.standard_error(i), new.standard_error(i))
        z = difference / standard_error
        bad = worse[i] * z > z_limit and abs(difference) >= min_effect_sigmas * previous.std[i]
        if bad:
            regressed.append((abs(z), name))
        rows[name] = {
            "previous_mean": sig(previous.mean[i]),
            "previous_std": sig(previous.std[i]),
            "new_mean": sig(new.mean[i]),
            "new_std": sig(new.std[i]),
            "z": sig(z, 4),
            "regressed": bad,
        }
    if not regressed:
        return None
    score, name = max(regressed)
    row = rows[name]
    return Regression(
        score=sig(score),
        threshold=sig(z_limit),
        summary=(
            f"mean {name} {row['previous_mean']:.3f} -> {row['new_mean']:.3f} "
            f"(z={row['z']:+.1f} beyond {z_limit:.2f})"
        ),
        evidence={
            "statistic": name,
            "z_threshold": sig(z_limit),
            "min_effect_sigmas": min_effect_sigmas,
            "previous_baseline_size": previous.count,
            "new_baseline_size": new.count,
            "statistics": rows,
        },
    )


def rollout_alert(
    *,
    detector: str,
    severity: Severity,
    record: TelemetryRecord,
    previous_version: str,
    regression: Regression,
    sample_event_ids: list[str],
) -> Alert:
    """One critical-by-default drift alert for a regressed rollout, opened by `record`.

    `record` is the event that completed the new version's baseline: the incident's opener.
    """
    return new_alert(
        detector=detector,
        kind=AlertKind.DRIFT,
        severity=severity,
        fingerprint=incident_fingerprint(
            detector, record.model_id, record.model_version, record.event_id
        ),
        record=record,
        client_id=None,
        score=regression.score,
        threshold=regression.threshold,
        summary=(
            f"rollout of {record.model_id} v{record.model_version} regressed against "
            f"v{previous_version}: {regression.summary}"
        ),
        evidence={
            "previous_version": previous_version,
            "new_version": record.model_version,
            **regression.evidence,
            "sample_event_ids": sample_event_ids,
        },
        labels=dict(ROLLOUT_LABELS),
    )
