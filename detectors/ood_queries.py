"""Out-of-distribution queries: a client whose inputs lie off the benign data manifold far more
often than the population's do — Tramèr et al. 2016 extract models with uniform random inputs,
KnockoffNets (Orekondy et al. 2019) with natural images of another distribution, and FGSM/PGD
evasion (Goodfellow et al. 2015; Madry et al. 2018) sends natural inputs plus a small
perturbation that no natural input carries.

Per (model, version) a bounded reference sample is taken from the first `reference_size`
feature vectors (no client contributes more than `max_client_share` of it). A query's
outlyingness is its distance to its k-th nearest reference point (Euclidean), and it is an
*outlier* when that exceeds the conformal (1 - q) quantile of the reference's own leave-one-out
k-NN distances: for an exchangeable benign query P(outlier) <= q (Vovk et al. 2005), so q is the
population's outlier rate by construction, not a fitted number. Per (model, client) a Wald
SPRT (Wald 1945) runs over the Bernoulli "outlier" observations between
H0: rate <= null_ratio x p0 and H1: rate >= alt_ratio x p0, p0 = max(q, the outlier rate of
unflagged clients now: covariate drift moves everyone, and is the drift detectors' business),
with boundaries from alpha and beta as in `boundary_probing`; alpha bounds the false alarms
per test, nothing is tuned on data.

Evasion versus extraction, label-free: an adversarial example is a natural input plus a
small, spread-out perturbation. Its k-NN distance is only moderately above the threshold (at
most `near_factor` x it) while its coarse structure — its projection on the reference's top
`coarse_components` principal components, where a sign perturbation spread over all features
mostly cancels — is in-distribution (k-NN distance there below that space's own (1 - q)
quantile). Uniform noise is far from every reference point; most natural OOD images have an
out-of-distribution coarse structure. An incident whose outliers are at least `evasion_share`
such "near-manifold" outliers is reported as kind `evasion`, otherwise `extraction`.

Sybil rings: a campaign dealt out over many accounts keeps each below the few dozen queries
a per-client test needs. The queries of every *low-volume* client (fewer than
`cohort_max_queries` so far, and no open incident) also feed one pooled SPRT per version
(`cohort.CohortTest`, same hypotheses and error rates); a rejection whose outliers are spread
over at least `cohort_min_clients` accounts, none owning more than `cohort_max_share` of
them, is one alert labelled {"pattern": "sybil", "variant": "ood_queries"} listing the
accounts whose own outlier rate reached H1 in `evidence.client_ids`.

Distances are computed one query at a time (matrix-vector products), so a query's score never
depends on how the stream was cut into batches.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint
from mlwarden.detectors.client_state import check_state_version
from mlwarden.detectors.cohort import CohortTest
from mlwarden.detectors.columns import feature_vector
from mlwarden.detectors.online import (
    ClientSprt,
    IdleTable,
    RunningRate,
    SprtConfig,
    WaldTest,
    close_if_quiet,
    flag,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_MAX_LISTED_CLIENTS = 50
_STATE_VERSION = 2


# Above this population outlier rate, per-client tests stop: see `_test`.
_MAX_POPULATION_RATE = 0.5


class OodQueriesConfig(SprtConfig):
    """Reference sample, outlier quantile, Wald SPRT error rates, evasion rule, timing."""

    reference_size: int = Field(default=2_000, ge=20, description="Warm-up vectors per version.")
    max_client_share: float = Field(default=0.05, gt=0, le=1, description="Per client, in it.")
    neighbours: int = Field(default=3, ge=1, description="k of the k-NN distance.")
    outlier_quantile: float = Field(default=0.01, gt=0, lt=0.5, description="q: benign rate.")
    null_ratio: float = Field(default=3.0, ge=1, description="H0: rate <= this x q.")
    alt_ratio: float = Field(default=10.0, gt=1, description="H1: rate >= this x q.")
    coarse_components: int = Field(default=8, ge=1, description="Principal components kept.")
    near_factor: float = Field(default=1.5, gt=1, description="Near-manifold: score <= this x t.")
    evasion_share: float = Field(default=0.5, gt=0, le=1, description="Near share for evasion.")
    population_memory: int = Field(default=5_000, ge=100, description="Events in its rate.")
    reference_idle_seconds: float = Field(default=7 * 86_400.0, gt=0)
    cohort_max_queries: int = Field(
        default=20, ge=0, description="A client is low-volume (pooled) below this; 0: off."
    )
    cohort_min_clients: int = Field(default=5, ge=2, description="Accounts in a sybil ring.")
    cohort_max_share: float = Field(default=0.5, gt=0, le=1, description="Of the ring's hits.")
    cohort_severity: Severity = Severity.CRITICAL

    @model_validator(mode="after")
    def _consistent(self) -> OodQueriesConfig:
        if self.neighbours >= self.reference_size:
            raise ValueError("neighbours must be below reference_size")
        return self


def _kth_distances(points: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    """k-th nearest-neighbour distance of each row of `points` to the others (or itself)."""
    squared = (points * points).sum(axis=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * points @ points.T
    if leave_one_out:
        np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.maximum(np.partition(d2, k - 1, axis=1)[:, k - 1], 0.0))


def _conformal_quantile(scores: np.ndarray, q: float) -> float:
    """The ceil((n + 1)(1 - q))-th smallest score: P(new score > it) <= q if exchangeable."""
    rank = min(len(scores), math.ceil((len(scores) + 1) * (1.0 - q)))
    return float(np.sort(scores)[rank - 1])


class _Reference:
    """A (model, version)'s warm-up sample; once full, the frozen k-NN scorer."""

    def __init__(self, rows: list[list[float]], counts: dict[str, int]) -> None:
        self.rows, self.counts = rows, counts
        self.population = RunningRate()  # outlier rate of unflagged clients, once frozen
        self.cohort = CohortTest()  # the pooled test of low-volume clients
        self.frozen = False
        self.threshold = self.coarse_threshold = 0.0

    def freeze(self, cfg: OodQueriesConfig, saved: list[Any] | None = None) -> None:
        """Build the scorer; `saved` ([threshold, coarse threshold, basis]) skips the SVD and
        the quantiles, so a restored scorer is bit-identical whatever the LAPACK build."""
        x = np.asarray(self.rows, dtype=np.float64)
        self.points, self.norms = x, (x * x).sum(axis=1)
        self.mean = x.mean(axis=0)
        if saved is None:
            _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
            self.basis = np.ascontiguousarray(vt[: cfg.coarse_components].T)
        else:
            self.basis = np.asarray(saved[2], dtype=np.float64).reshape(x.shape[1], -1)
        self.coarse = (x - self.mean) @ self.basis
        self.coarse_norms = (self.coarse * self.coarse).sum(axis=1)
        if saved is None:
            q, k = cfg.outlier_quantile, cfg.neighbours
            self.threshold = _conformal_quantile(_kth_distances(x, k, True), q)
            self.coarse_threshold = _conformal_quantile(_kth_distances(self.coarse, k, True), q)
        else:
            self.threshold, self.coarse_threshold = float(saved[0]), float(saved[1])
        self.frozen, self.counts = True, {}

    def saved(self) -> list[Any] | None:
        if not self.frozen:
            return None
        return [self.threshold, self.coarse_threshold, self.basis.ravel().tolist()]

    def score(self, x: np.ndarray, k: int) -> float:
        d2 = self.norms - 2.0 * (self.points @ x) + float(x @ x)
        return math.sqrt(max(float(np.partition(d2, k - 1)[k - 1]), 0.0))

    def coarse_score(self, x: np.ndarray, k: int) -> float:
        c = (x - self.mean) @ self.basis
        d2 = self.coarse_norms - 2.0 * (self.coarse @ c) + float(c @ c)
        return math.sqrt(max(float(np.partition(d2, k - 1)[k - 1]), 0.0))


@dataclass(slots=True)
class _Client(WaldTest):
    """The running test (hits: outliers), and what the evasion rule and the cohort need."""

    seen: int = 0  # queries since the client (re)appeared: low-volume ones join the cohort
    near: int = 0  # near-manifold outliers in the test (small perturbations of natural inputs)
    outlier_ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))

    def restart(self, now: float) -> None:
        WaldTest.restart(self, now)
        self.near = 0


class OodQueriesDetector(Detector):
    """Alerts once per incident when a client's off-manifold query rate passes a Wald SPRT."""

    name: ClassVar[str] = "ood_queries"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = OodQueriesConfig

    def __init__(self, config: OodQueriesConfig | None = None) -> None:
        cfg = self.config = config or OodQueriesConfig()
        self.sprt = ClientSprt(self.name, cfg)
        self._clients: IdleTable[_Client] = IdleTable(cfg.idle_seconds)
        self._references: IdleTable[_Reference] = IdleTable(cfg.reference_idle_seconds)

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._clients.advance(record.timestamp, None)
            self._references.advance(record.timestamp, None)
            features = feature_vector(record)
            if features is None or not features:
                continue
            alerts.extend(self._observe(record, features))
        return alerts

    def _observe(self, record: TelemetryRecord, features: tuple[float, ...]) -> list[Alert]:
        cfg, now = self.config, record.timestamp
        ref_key = (record.model_id, record.model_version)
        reference = self._references.get(ref_key) or _Reference([], {})
        self._references.put(ref_key, now, reference)
        if not reference.frozen:  # warm-up: learn the population, test nobody yet
            rows, counts = reference.rows, reference.counts
            taken = counts.get(record.client_id, 0)
            fits = not rows or len(features) == len(rows[0])
            cap = max(1, int(cfg.max_client_share * cfg.reference_size))
            if fits and taken < cap and all(map(math.isfinite, features)):
                rows.append([float(v) for v in features])
                counts[record.client_id] = taken + 1
                if len(rows) >= cfg.reference_size:
                    reference.freeze(cfg)
            return []
        if len(features) != reference.points.shape[1] or not all(map(math.isfinite, features)):
            return []
        x = np.asarray(features, dtype=np.float64)
        score = reference.score(x, cfg.neighbours)
        outlier = score > reference.threshold
        near = (
            outlier
            and score <= cfg.near_factor * reference.threshold
            and reference.coarse_score(x, cfg.neighbours) <= reference.coarse_threshold
        )
        key = (record.model_id, record.client_id)
        client = self._clients.get(key) or _Client(test_start=now)
        self._clients.put(key, now, client)
        if outlier:
            client.outlier_ids.append(record.event_id)
        client.seen += 1
        pooled = client.seen <= cfg.cohort_max_queries and client.incident is None
        alerts = [self._cohort_test(record, reference, outlier)] if pooled else []
        alerts.append(self._test(record, client, reference, outlier, near, score))
        if client.incident is None and not pooled:
            # Neither flagged clients nor the low-volume pool (where a ring hides) teach the
            # population its rate.
            reference.population.update(outlier, cfg.population_memory)
        return [alert for alert in alerts if alert is not None]

    def hypotheses(self, reference: _Reference) -> tuple[float, float, float]:
        """(population outlier rate p0, H0 rate, H1 rate): p0 is q, or the rate now observed
        if higher (covariate drift moves every client off the reference; that is drift)."""
        return self.config.hypotheses(max(self.config.outlier_quantile, reference.population.rate))

    def _test(
        self,
        record: TelemetryRecord,
        client: _Client,
        reference: _Reference,
        outlier: bool,
        near: bool,
        score: float,
    ) -> Alert | None:
        p0, h0, h1 = self.hypotheses(reference)
        if p0 >= _MAX_POPULATION_RATE:
            # Most of the population is off the reference: that is drift, which no single
            # client can be blamed for (and an SPRT against a rate near 1 has no power).
            return None
        client.observe(outlier, h0, h1)
        client.near += near
        return self.sprt.step(client, record, lambda: self._alert(record, client, reference, score))

    def _alert(
        self, record: TelemetryRecord, client: _Client, reference: _Reference, score: float
    ) -> Alert:
        cfg = self.config
        rate = client.hits / client.queries
        p0, h0, h1 = self.hypotheses(reference)
        near_share = client.near / max(client.hits, 1)
        evasion = near_share >= cfg.evasion_share
        what = (
            "small perturbations of in-distribution inputs (coarse structure in-distribution)"
            if evasion
            else "off the data manifold"
        )
        return self.sprt.alert(
            client,
            record,
            kind=AlertKind.EVASION if evasion else AlertKind.EXTRACTION,
            summary=(
                f"client {record.client_id}: {client.hits} of its last {client.queries} "
                f"queries to {record.model_id} were {what} (k-NN distance above the population's "
                f"{1 - cfg.outlier_quantile:.0%} quantile), a rate of {rate:.1%} against "
                f"{p0:.1%} for the population; Wald SPRT rejected 'ordinary "
                f"client' at alpha={cfg.alpha:g}"
            ),
            rates=(h0, h1),
            details={
                "outlier_score": "knn_distance",
                "neighbours": cfg.neighbours,
                "population_quantile": 1.0 - cfg.outlier_quantile,
                "outlier_score_threshold": round(reference.threshold, 6),
                "coarse_score_threshold": round(reference.coarse_threshold, 6),
                "last_outlier_score": round(score, 6),
                "reference_size": int(reference.points.shape[0]),
                "reference_model_version": record.model_version,
                "queries_in_test": client.queries,
                "outliers_in_test": client.hits,
                "near_manifold_outliers_in_test": client.near,
                "near_manifold_share": round(near_share, 6),
                "client_outlier_rate": round(rate, 6),
                "population_outlier_rate": round(p0, 6),
            },
            samples=client.outlier_ids,
            labels={"pattern": "ood_queries", "variant": "evasion" if evasion else "extraction"},
        )

    def _cohort_test(
        self, record: TelemetryRecord, reference: _Reference, outlier: bool
    ) -> Alert | None:
        """One observation of the version's pooled low-volume test; an alert if it names a
        new ring (see the module docstring)."""
        cfg, now, cohort = self.config, record.timestamp, reference.cohort
        p0, h0, h1 = self.hypotheses(reference)
        if p0 >= _MAX_POPULATION_RATE:
            return None
        cohort.observe_client(record.client_id, outlier, h0, h1)
        if cohort.llr <= self.sprt.log_b:
            close_if_quiet(cohort, now, cfg.quiet_seconds)
            cohort.restart(now)
            return None
        if cohort.llr < self.sprt.log_a:
            return None
        ring = cohort.ring(h1, cfg.cohort_min_clients, cfg.cohort_max_share)
        alert = None
        if ring is not None and flag(
            cohort,
            now,
            lambda: incident_fingerprint(self.name, record.model_id, "sybil", record.event_id),
        ):
            alert = self._cohort_alert(record, reference, ring)
        cohort.restart(now)
        return alert

    def _cohort_alert(
        self, record: TelemetryRecord, reference: _Reference, ring: list[str]
    ) -> Alert:
        cohort, cfg = reference.cohort, self.config
        p0, h0, h1 = self.hypotheses(reference)
        listed = ring[:_MAX_LISTED_CLIENTS]
        return self.sprt.alert(
            cohort,
            record,
            kind=AlertKind.EXTRACTION,
            client_id=listed[0],
            severity=cfg.cohort_severity,
            summary=(
                f"{len(ring)} low-volume client ids sent {record.model_id} queries off the data "
                f"manifold at a pooled rate of {cohort.hits / cohort.queries:.1%} "
                f"({cohort.hits} of {cohort.queries}) against {p0:.1%} for the population: "
                f"one extraction campaign split across accounts (Wald SPRT, alpha={cfg.alpha:g})"
            ),
            rates=(h0, h1),
            details={
                "pooled": f"clients with fewer than {cfg.cohort_max_queries} queries",
                "queries_in_test": cohort.queries,
                "outliers_in_test": cohort.hits,
                "pooled_outlier_rate": round(cohort.hits / cohort.queries, 6),
                "population_outlier_rate": round(p0, 6),
                "participants": len(ring),
                "client_ids": listed,
                "clients_in_test": len(cohort.members),
                "outlier_score_threshold": round(reference.threshold, 6),
            },
            samples=(),
            labels={"pattern": "sybil", "variant": "ood_queries"},
        )

    @property
    def tracked_clients(self) -> int:
        """(model, client) test states held in memory now."""
        return len(self._clients)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._clients.saved_watermark,
            "reference_watermark": self._references.saved_watermark,
            "references": [
                [m, v, last_ts, r.rows, r.counts, r.saved(), r.population.to_json(), cohort]
                for (m, v), last_ts, r in self._references.items()
                for cohort in [r.cohort.to_json()]
            ],
            "clients": [
                [m, c, ts, s.llr, s.queries, s.hits, s.near, s.test_start, s.incident, *row]
                for (m, c), ts, s in self._clients.items()
                for row in [(list(s.outlier_ids), s.seen)]
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, 1, _STATE_VERSION)
        references = []
        for m, v, last_ts, rows, counts, saved, rate, *cohort in state["references"]:
            reference = _Reference([list(map(float, row)) for row in rows], dict(counts))
            reference.population = RunningRate.from_json(rate)
            if cohort:  # version 1 had no cohort test: it starts afresh
                reference.cohort = CohortTest.from_json(cohort[0])
            if saved is not None:
                reference.freeze(self.config, saved)
            references.append((m, v, last_ts, reference))
        self._references.restore(state["reference_watermark"], iter(references))
        clients = []
        for m, c, ts, llr, n, k, near, start, inc, ids, *seen in state["clients"]:
            client = _Client(llr, n, k, start, inc, seen=seen[0] if seen else n, near=near)
            client.outlier_ids.extend(ids)
            clients.append((m, c, ts, client))
        self._clients.restore(state["watermark"], iter(clients))
