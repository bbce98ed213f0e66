"""Boundary probing: a client whose queries sit near the decision boundary far more often than
the population's do — HopSkipJump and other decision-based attacks walk the boundary, and
Jacobian-based augmentation (Papernot et al. 2017) synthesises points next to it.

Per model, the population's low-margin rate p0 (share of predictions with top1 - top2 below
`low_margin`) is learned online from every client not currently flagged. Per client, a Wald
sequential probability ratio test (Wald 1945) runs over its queries, each one a Bernoulli
"low margin" observation, between

    H0: p <= null_ratio x p0   (an ordinary client; some favour confusable classes)
    H1: p >= alt_ratio  x p0   (a prober)

with Wald's boundaries A = (1 - beta)/alpha and B = beta/(1 - alpha) on the likelihood ratio. The
likelihood ratio is monotone in p, so alpha bounds the false-alarm probability of one test for
*every* client whose rate is at most null_ratio x p0 (not only at the point hypothesis), and beta
bounds the miss probability for every client at alt_ratio x p0 or above. When a test accepts
H0 a new one starts, so a client's false-alarm rate is at most alpha per completed test (about
alpha / 15 per query with the defaults: a client at p0 accepts H0 after ~15 queries, ~22 at H0).
alpha and beta are the configuration; nothing is tuned on data.

One alert per incident: the first rejection of H0 opens it; later rejections only extend it;
it closes when a test accepts H0 at least `quiet_seconds` after the last rejection, or when
the client's state expires after `idle_seconds` without queries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from mlwarden.detectors.base import Detector, TelemetryBatch
from mlwarden.detectors.client_state import check_state_version
from mlwarden.detectors.columns import probability_vector
from mlwarden.detectors.online import (
    ClientSprt,
    IdleTable,
    RunningRate,
    SprtConfig,
    WaldTest,
    is_low_margin,
)
from mlwarden.schemas.alert import Alert, AlertKind
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_STATE_VERSION = 1


class BoundaryProbingConfig(SprtConfig):
    """Wald SPRT error rates, the indifference zone around the population rate, timing."""

    low_margin: float = Field(default=0.1, gt=0, lt=1, description="top1 - top2 below this.")
    null_ratio: float = Field(default=2.0, ge=1, description="H0: rate <= this x population.")
    alt_ratio: float = Field(default=6.0, gt=1, description="H1: rate >= this x population.")
    min_population_rate: float = Field(default=0.01, gt=0, lt=0.5)
    population_memory: int = Field(default=50_000, ge=100, description="Events in p0.")
    warmup_events: int = Field(default=2_000, ge=1, description="Model events before testing.")


@dataclass(slots=True)
class _Client(WaldTest):
    """The running test (hits: low-margin queries) and the last low-margin event ids."""

    low_ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))


class BoundaryProbingDetector(Detector):
    """Alerts once per incident when a client's low-margin rate passes a Wald SPRT."""

    name: ClassVar[str] = "boundary_probing"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = BoundaryProbingConfig

    def __init__(self, config: BoundaryProbingConfig | None = None) -> None:
        self.config = config or BoundaryProbingConfig()
        self.sprt = ClientSprt(self.name, self.config)
        self._clients: IdleTable[_Client] = IdleTable(self.config.idle_seconds)
        self._population: dict[str, RunningRate] = {}

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._clients.advance(record.timestamp, None)
            probabilities = probability_vector(record)
            if probabilities is None:
                continue
            alert = self._observe(record, is_low_margin(probabilities, self.config.low_margin))
            if alert is not None:
                alerts.append(alert)
        return alerts

    def hypotheses(self, model_id: str) -> tuple[float, float, float]:
        """(population rate p0, H0 rate, H1 rate) for `model_id` now."""
        population = self._population.get(model_id)
        p0 = max(self.config.min_population_rate, population.rate if population else 0.0)
        return self.config.hypotheses(p0)

    def _observe(self, record: TelemetryRecord, low: bool) -> Alert | None:
        cfg, now = self.config, record.timestamp
        key = (record.model_id, record.client_id)
        client = self._clients.get(key)
        if client is None:
            client = _Client(test_start=now)
        self._clients.put(key, now, client)
        if low:
            client.low_ids.append(record.event_id)
        population = self._population.setdefault(record.model_id, RunningRate())
        alert = None
        if population.weight >= cfg.warmup_events:
            alert = self._test(record, client, low)
        if client.incident is None:  # flagged clients do not teach the population
            population.update(low, cfg.population_memory)
        return alert

    def _test(self, record: TelemetryRecord, client: _Client, low: bool) -> Alert | None:
        p0, h0, h1 = self.hypotheses(record.model_id)
        client.observe(low, h0, h1)
        return self.sprt.step(client, record, lambda: self._alert(record, client, p0, h0, h1))

    def _alert(
        self, record: TelemetryRecord, client: _Client, p0: float, h0: float, h1: float
    ) -> Alert:
        cfg = self.config
        rate = client.hits / client.queries
        return self.sprt.alert(
            client,
            record,
            kind=self.kind,
            summary=(
                f"client {record.client_id}: {client.hits} of its last {client.queries} queries "
                f"to {record.model_id} sat near the decision boundary (margin < "
                f"{cfg.low_margin:g}), a rate of {rate:.1%} against {p0:.1%} for the "
                f"population; Wald SPRT rejected 'ordinary client' at alpha={cfg.alpha:g}"
            ),
            rates=(h0, h1),
            details={
                "low_margin_threshold": cfg.low_margin,
                "queries_in_test": client.queries,
                "low_margin_in_test": client.hits,
                "client_low_margin_rate": round(rate, 6),
                "population_low_margin_rate": round(p0, 6),
                "population_events": self._population[record.model_id].weight,
            },
            samples=client.low_ids,
            labels={"pattern": "boundary_probing"},
        )

    @property
    def tracked_clients(self) -> int:
        """(model, client) test states held in memory now."""
        return len(self._clients)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._clients.saved_watermark,
            "population": {m: r.to_json() for m, r in self._population.items()},
            "clients": [
                [m, c, last_ts, s.llr, s.queries, s.hits, s.test_start, s.incident, list(s.low_ids)]
                for (m, c), last_ts, s in self._clients.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, _STATE_VERSION)
        self._population = {m: RunningRate.from_json(r) for m, r in state["population"].items()}
        self._clients.restore(
            state["watermark"],
            (
                (m, c, last_ts, _Client(llr, n, lows, start, inc, deque(ids, maxlen=_SAMPLE_IDS)))
                for m, c, last_ts, llr, n, lows, start, inc, ids in state["clients"]
            ),
        )
