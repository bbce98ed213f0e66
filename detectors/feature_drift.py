"""Univariate feature drift: a river trigger per feature, confirmed against the baseline.

Per (model_id, model_version) the first `baseline_size` sampled events with features are the
reference (`Baselines`; one event in `sample_every` is looked at, see `feature_window`).
After that, each sampled event's features, standardised by the reference's mean and std,
feed one river drift detector per feature (`river_triggers`: ADWIN by default).
A trigger alone never alerts. With 64 features, 64 detectors each allowed a small false-
positive rate would page all day, so false alarms are controlled twice:

1. Bonferroni: the trigger's level (ADWIN's delta) is split over the features.
2. Confirmation: `window_size` sampled events after a trigger, the feature's last
   `window_size` values (all after the trigger) are tested against its reference values
   with a two-sample KS test at `confirm_alpha`. Only a confirmed feature alerts.

A false alarm needs both a spurious trigger and a failed test. Confirmed features open one
incident per version and one alert; features confirmed while it is open join it silently.
Every `window_size` events the incident's features are tested again: when all of them pass at
`clear_alpha` the window matches the baseline again and the incident closes. With no
evidence at all for `quiet_seconds` (traffic stopped) it closes too. Evidence: each confirmed
feature's KS statistic, p-value, PSI on the reference's quantile bins and mean shift in
reference stds, the features with the highest PSI, sample event ids.

Triggers watch each feature's location; a change of spread or shape alone is left to
`mmd_drift`, which compares whole distributions. Records without features, or with a
different number of features than the version's first, are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from mlwarden.detectors.base import incident_fingerprint, new_alert
from mlwarden.detectors.baseline import ModelKey
from mlwarden.detectors.feature_rows import FloatArray, feature_label, significant, stable_seed
from mlwarden.detectors.feature_window import FeatureVersion, FeatureWindowDetector
from mlwarden.detectors.psi import bin_shares, psi, quantile_edges
from mlwarden.detectors.river_triggers import DriftTriggerConfig, TriggerBank
from mlwarden.detectors.two_sample import ks_critical, ks_p_value, ks_statistic
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_STATE_VERSION = 1
_PSI_SHOWN = 10


class FeatureDriftConfig(DriftTriggerConfig):
    """Trigger settings plus the reference, the confirmation test and incident lifetime."""

    baseline_size: int = Field(default=500, ge=20, description="Sampled events in a reference.")
    window_size: int = Field(default=200, ge=20, description="Sampled events a test looks at.")
    sample_every: int = Field(
        default=10, ge=1, description="Watch one feature event in N (keyed hash of event_id)."
    )
    confirm_alpha: float = Field(
        default=1e-3, gt=0, lt=1, description="KS level that confirms a triggered feature."
    )
    clear_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="All incident features above it: incident over."
    )
    psi_bins: int = Field(default=10, ge=2, description="Reference quantile bins for PSI.")
    critical_psi: float = Field(
        default=0.25, gt=0, description="A confirmed feature with PSI this high is critical."
    )
    quiet_seconds: float = Field(
        default=3600.0, gt=0, description="An incident with no evidence this long is over."
    )
    idle_seconds: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="A version unseen this long is forgotten."
    )
    max_features: int = Field(default=256, ge=1, description="Features watched (the first N).")
    severity: Severity = Severity.WARNING


@dataclass(frozen=True, slots=True)
class _Reference:
    """What the tests need from a frozen reference; rebuilt from it, never stored."""

    mean: FloatArray
    scale: FloatArray  # std, 1 where the reference is constant
    columns: FloatArray  # features x events, each row sorted
    edges: list[FloatArray]
    shares: list[FloatArray]
    confirm_limit: float  # KS statistic at confirm_alpha for these sample sizes
    clear_limit: float

    @classmethod
    def build(cls, rows: list[tuple[float, ...]], config: FeatureDriftConfig) -> _Reference:
        data = np.asarray(rows, dtype=np.float64)
        std = data.std(axis=0)
        columns = np.sort(data.T, axis=1)
        edges = [quantile_edges(column, config.psi_bins) for column in columns]
        n, m = data.shape[0], config.window_size
        return cls(
            mean=data.mean(axis=0),
            scale=np.where(std > 0.0, std, 1.0),
            columns=columns,
            edges=edges,
            shares=[bin_shares(column, e) for column, e in zip(columns, edges, strict=True)],
            confirm_limit=ks_critical(config.confirm_alpha, n, m),
            clear_limit=ks_critical(config.clear_alpha, n, m),
        )


@dataclass(slots=True)
class _Incident:
    fingerprint: str
    features: list[int]
    last_evidence_ts: float
    next_check: int  # event count of the next "back to baseline?" test


@dataclass(slots=True)
class _Version(FeatureVersion):
    reference: _Reference | None = None
    triggers: TriggerBank | None = None
    pending: dict[int, int] = field(default_factory=dict)  # feature -> count when tested
    incident: _Incident | None = None


class FeatureDriftDetector(FeatureWindowDetector[_Version]):
    """Alerts once per incident when features of a model version drift from its reference."""

    name: ClassVar[str] = "feature_drift"
    kind: ClassVar[AlertKind] = AlertKind.DRIFT
    config_model: ClassVar[type[BaseModel]] = FeatureDriftConfig

    def __init__(self, config: FeatureDriftConfig | None = None) -> None:
        self.config = config or FeatureDriftConfig()
        super().__init__(self.config, _Version)

    def _freeze(self, version: _Version, key: ModelKey, restoring: bool) -> None:
        rows = version.baseline.reference(key)
        assert rows is not None
        version.reference = _Reference.build(rows, self.config)
        seed = stable_seed(self.config.seed, *key)
        version.triggers = TriggerBank(self.config, version.dim, seed)
        if not restoring:
            # The triggers start with the reference as their history, so what they look for
            # is a change from the baseline: a version whose first tested events already
            # differ from a baseline fitted offline is seen too. (A restored bank has its
            # own history in the state.)
            reference = version.reference
            for row in np.asarray(rows, dtype=np.float64):
                version.triggers.update(((row - reference.mean) / reference.scale).tolist())

    def _step(
        self,
        record: TelemetryRecord,
        version: _Version,
        values: tuple[float, ...],
        window: FloatArray,
    ) -> Alert | None:
        reference, triggers = version.reference, version.triggers
        assert reference is not None
        assert triggers is not None
        incident = version.incident
        quiet = self.config.quiet_seconds
        if incident is not None and record.timestamp - incident.last_evidence_ts > quiet:
            version.incident = incident = None
        standardised = ((np.asarray(values) - reference.mean) / reference.scale).tolist()
        for j in triggers.update(standardised):
            if j not in version.pending and (incident is None or j not in incident.features):
                version.pending[j] = version.count + len(window)  # test post-trigger events only
        alert = None
        due = sorted(j for j, at in version.pending.items() if at == version.count)
        if due:
            alert = self._confirm(record, version, reference, window, due)
        if version.incident is not None and version.count >= version.incident.next_check:
            self._recheck(record, version, reference, window)
        return alert

    def _confirm(
        self,
        record: TelemetryRecord,
        version: _Version,
        reference: _Reference,
        window: FloatArray,
        due: list[int],
    ) -> Alert | None:
        confirmed: dict[int, float] = {}
        for j in due:
            del version.pending[j]
            statistic = ks_statistic(reference.columns[j], window[:, j])
            if statistic > reference.confirm_limit:
                confirmed[j] = statistic
        if not confirmed:
            return None
        incident = version.incident
        if incident is not None:
            incident.features = sorted({*incident.features, *confirmed})
            incident.last_evidence_ts = record.timestamp
            return None
        fingerprint = incident_fingerprint(
            self.name, record.model_id, record.model_version, record.event_id
        )
        version.incident = _Incident(
            fingerprint, sorted(confirmed), record.timestamp, version.count + len(window)
        )
        return self._alert(record, version, reference, window, confirmed, fingerprint)

    def _recheck(
        self, record: TelemetryRecord, version: _Version, reference: _Reference, window: FloatArray
    ) -> None:
        """Close the incident if every feature in it looks like its reference again."""
        incident = version.incident
        assert incident is not None
        still = [
            j
            for j in incident.features
            if ks_statistic(reference.columns[j], window[:, j]) > reference.clear_limit
        ]
        if not still:
            version.incident = None
            return
        incident.last_evidence_ts = record.timestamp
        incident.next_check = version.count + len(window)

    def _alert(
        self,
        record: TelemetryRecord,
        version: _Version,
        reference: _Reference,
        window: FloatArray,
        confirmed: dict[int, float],
        fingerprint: str,
    ) -> Alert:
        n, m = reference.columns.shape[1], len(window)
        shifts = (window.mean(axis=0) - reference.mean) / reference.scale
        psis = [
            psi(reference.shares[j], bin_shares(window[:, j], reference.edges[j]))
            for j in range(version.dim)
        ]
        features = [
            {
                "feature": feature_label(j, version.names),
                "index": j,
                "ks_statistic": significant(statistic),
                "p_value": significant(ks_p_value(statistic, n, m), 4),
                "psi": significant(psis[j], 4),
                "mean_shift_std": significant(float(shifts[j]), 4),
            }
            for j, statistic in sorted(confirmed.items(), key=lambda item: (-item[1], item[0]))
        ]
        top = sorted(range(version.dim), key=lambda j: (-psis[j], j))[:_PSI_SHOWN]
        worst_psi = max(psis[j] for j in confirmed)
        critical = worst_psi >= self.config.critical_psi
        listed = ", ".join(
            f"{f['feature']} (KS {f['ks_statistic']:.3f}, PSI {f['psi']:.3f})" for f in features[:3]
        )
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=Severity.CRITICAL if critical else self.config.severity,
            fingerprint=fingerprint,
            record=record,
            client_id=None,
            score=significant(max(confirmed.values())),
            threshold=significant(reference.confirm_limit),
            summary=(
                f"{len(features)} of {version.dim} features of {record.model_id} "
                f"v{record.model_version} drifted from its baseline over the last {m} events: "
                f"{listed}"
            ),
            evidence={
                "statistic": "ks_two_sample",
                "trigger": self.config.method,
                "features": features,
                "psi_top": [
                    {"feature": feature_label(j, version.names), "psi": significant(psis[j], 4)}
                    for j in top
                ],
                "confirm_alpha": self.config.confirm_alpha,
                "ks_critical": significant(reference.confirm_limit),
                "baseline_size": n,
                "window_size": m,
                "sample_every": self.config.sample_every,
                "features_watched": version.dim,
                "sample_event_ids": list(version.recent_ids),
            },
        )

    def _encode_extra(self, version: _Version) -> dict[str, Any]:
        incident = version.incident
        return {
            "triggers": None if version.triggers is None else version.triggers.state_dict(),
            "pending": sorted(version.pending.items()),
            "incident": None
            if incident is None
            else [
                incident.fingerprint,
                incident.features,
                incident.last_evidence_ts,
                incident.next_check,
            ],
        }

    def _decode_extra(self, version: _Version, raw: dict[str, Any]) -> None:
        if version.triggers is not None:
            version.triggers.load_state_dict(raw["triggers"])
        version.pending = {int(j): int(at) for j, at in raw["pending"]}
        if raw["incident"] is not None:
            fingerprint, features, last_ts, next_check = raw["incident"]
            version.incident = _Incident(fingerprint, list(features), last_ts, next_check)
