"""Sybil extraction by gradient-sign augmentation: accounts whose queries are exact sign steps
of *other* accounts' queries.

Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017) and its variants studied
by PRADA (Juuti et al. 2019: T-RND, COLOR) build each new query as an earlier one plus
λ·sign(∇): every coordinate that moves, moves by the same amount. Split across many accounts
(sybils, to stay under per-account limits and per-account detectors), account B's query is a
sign step of the query account A sent a round earlier. Natural inputs almost never differ
like that: two natural inputs differ by varied amounts per coordinate. Blacklight's quantised
hashes (`blacklight.py`) cannot see it when λ exceeds the quantisation step (λ = 0.1 on a
[0, 1] scale against Blacklight's 50/255), and each account alone is caught only after dozens
of its queries; the pair structure across accounts shows from the first augmented round.

Per (model, version), each query is compared with the `candidates` nearest of the version's
last `ring_size` queries from other clients. It is a *step twin* of one when, of the
coordinates that differ, at least `min_step_coordinates` (all of them, for fewer features)
differ by the same magnitude — the largest difference, within `relative_tolerance`, which
absorbs rounding on the wire — and they are at least `step_share` of the coordinates that
differ (coordinates clipped at the edge of the input box move less). A query with a step
twin joins the two clients by an edge.

Per version, p0 is learned like every baseline: the rate of step twins over the
`reference_queries` queries after the ring first fills (nobody is tested meanwhile), floored
at `base_rate`. Then a Wald SPRT (Wald 1945) runs over the Bernoulli "step twin"
observations of all queries between H0: rate <= `null_ratio` x p0 and H1: rate >=
`alt_ratio` x p0; alpha bounds the false alarms per test. Inputs where such steps are common
in benign traffic (binary or one-hot features, integer counts moving by one) have a high p0:
the test then has little power there, but no false alarms either. When H0 is rejected, the
clients joined by the test's edges must number `min_clients` (two accounts sharing inputs are
not a sybil ring; one account's own steps are the per-client detectors' business). One alert
per incident, kind `extraction`, labelled {"pattern": "sybil"} with the ring's ids in
`evidence.client_ids`, which the shipped `sybil-extraction` playbook blocks together. The
incident closes after `quiet_seconds` without a rejection.

Needs `features`. Cross-client detectors see the clients of their own partition: with the
telemetry keyed by client, a ring spread over P partitions shows 1/P of its edges to each.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint
from mlwarden.detectors.client_state import pack_array, unpack_array
from mlwarden.detectors.columns import feature_vector
from mlwarden.detectors.online import (
    ClientSprt,
    IdleTable,
    SprtConfig,
    WaldTest,
    close_if_quiet,
    flag,
)
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 10
_MAX_LISTED_CLIENTS = 50
_MAX_EDGES = 4096
_STATE_VERSION = 1
_ZERO = 1e-3
"""A coordinate has not moved when its difference is below this share of the largest one."""

FloatMatrix = npt.NDArray[np.float32]


def _client_code(client_id: str) -> int:
    """A stable 63-bit code of a client id, so the ring masks a client's own queries in C."""
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest()) >> 1


def _squared_norm(x: npt.NDArray[np.float32]) -> float:
    return float(np.dot(x, x))


class SybilStepsConfig(SprtConfig):
    """Search ring, what counts as a sign step, the SPRT's error rates, the ring's size."""

    ring_size: int = Field(default=2048, ge=16, description="Recent queries searched per model.")
    candidates: int = Field(default=32, ge=1, description="Nearest ring entries checked.")
    min_step_coordinates: int = Field(default=8, ge=2, description="Moved by the same step.")
    step_share: float = Field(default=0.5, gt=0, le=1, description="Of the moved coordinates.")
    relative_tolerance: float = Field(default=0.02, gt=0, lt=0.5)
    base_rate: float = Field(default=1e-3, gt=0, lt=0.1, description="Floor of p0.")
    reference_queries: int = Field(
        default=5_000, ge=100, description="Queries, once the ring is full, that learn p0."
    )
    null_ratio: float = Field(default=3.0, ge=1, description="H0: rate <= this x p0.")
    alt_ratio: float = Field(default=10.0, gt=1, description="H1: rate >= this x p0.")
    min_clients: int = Field(default=5, ge=2, description="Accounts in a ring.")
    severity: Severity = Severity.CRITICAL

    @model_validator(mode="after")
    def _candidates_fit(self) -> SybilStepsConfig:
        if self.candidates > self.ring_size:
            raise ValueError("candidates must not exceed ring_size")
        return self


@dataclass(frozen=True, slots=True)
class StepTwin:
    """The earlier query from another client that a query is a sign step of."""

    client_id: str
    event_id: str
    magnitude: float
    coordinates: int


def find_step_twin(
    x: npt.NDArray[np.float32], candidates: FloatMatrix, cfg: SybilStepsConfig
) -> int | None:
    """Index of the first of `candidates` that `x` is a sign step of, or None."""
    differences = np.abs(candidates - x)
    largest = differences.max(axis=1)
    moved = (differences > _ZERO * largest[:, None]).sum(axis=1)
    at_step = (differences >= (1.0 - cfg.relative_tolerance) * largest[:, None]).sum(axis=1)
    needed = min(cfg.min_step_coordinates, x.shape[0])
    steps = (largest > 0.0) & (at_step >= needed) & (at_step >= cfg.step_share * moved)
    hits = np.flatnonzero(steps)
    return int(hits[0]) if hits.size else None


class _Ring:
    """A model's last `ring_size` queries, and its SPRT over step twins."""

    def __init__(self, size: int, width: int) -> None:
        self.points: FloatMatrix = np.zeros((size, width), dtype=np.float32)
        self.norms = np.zeros(size, dtype=np.float32)
        self.codes = np.zeros(size, dtype=np.int64)
        self.clients: list[str] = [""] * size
        self.events: list[str] = [""] * size
        self.filled = self.position = 0
        self.reference = [0, 0]  # [queries, step twins] while learning p0, once the ring is full
        self.test = WaldTest()  # hits: step twins
        self.edges: dict[tuple[str, str], int] = {}
        self.twin_ids: deque[str] = deque(maxlen=_SAMPLE_IDS)
        self.last_twin: StepTwin | None = None

    def nearest(self, x: npt.NDArray[np.float32], code: int, k: int) -> npt.NDArray[np.intp]:
        """Ring slots of the `k` nearest queries from clients other than `code`'s, nearest
        first."""
        n = self.filled
        d2 = self.norms[:n] - 2.0 * (self.points[:n] @ x)
        d2[self.codes[:n] == code] = np.inf
        k = min(k, n)
        order = np.argpartition(d2, k - 1)[:k] if k < n else np.arange(n)
        order = order[np.argsort(d2[order], kind="stable")]
        return order[np.isfinite(d2[order])]

    def push(self, x: npt.NDArray[np.float32], code: int, client_id: str, event_id: str) -> None:
        slot = self.position
        self.points[slot] = x
        self.norms[slot] = _squared_norm(x)
        self.codes[slot] = code
        self.clients[slot], self.events[slot] = client_id, event_id
        self.position = (slot + 1) % len(self.clients)
        self.filled = min(self.filled + 1, len(self.clients))

    def restart(self, now: float) -> None:
        self.test.restart(now)
        self.edges.clear()

    def ring_members(self) -> list[tuple[str, int]]:
        """Every client joined by this test's edges, with its step twins (either end of an
        edge), most twins first (ties by id, so the listing is deterministic).

        Not the connected groups: how a campaign deals its queries out to accounts decides
        which pairs meet within one test (round-robin over 30 accounts with rounds of 100
        queries joins them in threes), so connectivity says more about the scheduler than
        about the ring.
        """
        twins: dict[str, int] = {}
        for (a, b), count in self.edges.items():
            twins[a] = twins.get(a, 0) + count
            twins[b] = twins.get(b, 0) + count
        return sorted(twins.items(), key=lambda item: (-item[1], item[0]))


class SybilStepsDetector(Detector):
    """Alerts once per incident when a model's queries are sign steps of other accounts'."""

    name: ClassVar[str] = "sybil_steps"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = SybilStepsConfig

    def __init__(self, config: SybilStepsConfig | None = None) -> None:
        cfg = self.config = config or SybilStepsConfig()
        self.sprt = ClientSprt(self.name, cfg)
        self._rings: IdleTable[_Ring] = IdleTable(cfg.idle_seconds)

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record in batch:
            self._rings.advance(record.timestamp, None)
            features = feature_vector(record)
            if not features or not all(map(math.isfinite, features)):
                continue
            alert = self._observe(record, np.asarray(features, dtype=np.float32))
            if alert is not None:
                alerts.append(alert)
        return alerts

    def hypotheses(self, ring: _Ring) -> tuple[float, float, float]:
        """(p0, H0 rate, H1 rate): p0 is the version's reference rate, or the base rate if
        higher (a clean reference of 5,000 queries cannot tell 0 from 1 in 10,000)."""
        cfg = self.config
        queries, twins = ring.reference
        return cfg.hypotheses(max(cfg.base_rate, twins / max(queries, 1)))

    def _observe(self, record: TelemetryRecord, x: npt.NDArray[np.float32]) -> Alert | None:
        cfg, now = self.config, record.timestamp
        key = (record.model_id, record.model_version)
        ring = self._rings.get(key)
        if ring is None or ring.points.shape[1] != x.shape[0]:
            ring = _Ring(cfg.ring_size, x.shape[0])
            ring.restart(now)
        self._rings.put(key, now, ring)
        code = _client_code(record.client_id)
        twin = self._step_twin(ring, x, code)
        full = ring.filled == len(ring.clients)
        ring.push(x, code, record.client_id, record.event_id)
        if ring.reference[0] < cfg.reference_queries:
            # Learning the version's own rate of step twins; nobody is tested yet. Only once
            # the ring is full, so the rate is measured against as many candidates as tested.
            if full:
                ring.reference[0] += 1
                ring.reference[1] += twin is not None
                if ring.reference[0] == cfg.reference_queries:
                    ring.restart(now)  # the first test starts now
            return None
        if twin is not None:
            pair = tuple(sorted((record.client_id, twin.client_id)))
            if pair in ring.edges or len(ring.edges) < _MAX_EDGES:
                ring.edges[(pair[0], pair[1])] = ring.edges.get((pair[0], pair[1]), 0) + 1
            ring.twin_ids.append(record.event_id)
            ring.twin_ids.append(twin.event_id)
            ring.last_twin = twin
        return self._test(record, ring, twin is not None)

    def _step_twin(self, ring: _Ring, x: npt.NDArray[np.float32], code: int) -> StepTwin | None:
        if ring.filled == 0:
            return None
        slots = ring.nearest(x, code, self.config.candidates)
        if not slots.size:
            return None
        found = find_step_twin(x, ring.points[slots], self.config)
        if found is None:
            return None
        slot = int(slots[found])
        differences = np.abs(ring.points[slot] - x)
        largest = float(differences.max())
        moved = int((differences >= (1.0 - self.config.relative_tolerance) * largest).sum())
        return StepTwin(ring.clients[slot], ring.events[slot], largest, moved)

    def _test(self, record: TelemetryRecord, ring: _Ring, twin: bool) -> Alert | None:
        now, test = record.timestamp, ring.test
        _, h0, h1 = self.hypotheses(ring)
        test.observe(twin, h0, h1)
        if test.llr <= self.sprt.log_b:
            close_if_quiet(test, now, self.config.quiet_seconds)
            ring.restart(now)
            return None
        if test.llr < self.sprt.log_a:
            return None
        members = ring.ring_members()
        alert: Alert | None = None
        if len(members) >= self.config.min_clients and flag(
            test,
            now,
            lambda: incident_fingerprint(self.name, record.model_id, "sybil", record.event_id),
        ):
            alert = self._alert(record, ring, members)
        ring.restart(now)
        return alert

    def _alert(self, record: TelemetryRecord, ring: _Ring, members: list[tuple[str, int]]) -> Alert:
        cfg = self.config
        p0, h0, h1 = self.hypotheses(ring)
        twin = ring.last_twin
        listed = [client for client, _ in members[:_MAX_LISTED_CLIENTS]]
        return self.sprt.alert(
            ring.test,
            record,
            kind=self.kind,
            client_id=listed[0],
            summary=(
                f"{len(members)} client ids send {record.model_id} queries that are sign steps "
                f"(every moved feature moved by the same amount) of each other's queries: "
                f"{ring.test.hits} of the last {ring.test.queries} queries, against a benign "
                f"rate of {p0:.2%}; gradient-sign augmentation (Papernot et al.) split across "
                "accounts"
            ),
            rates=(h0, h1),
            details={
                "queries_in_test": ring.test.queries,
                "step_twins_in_test": ring.test.hits,
                "reference_step_twin_rate": round(p0, 6),
                "reference_queries": ring.reference[0],
                "participants": len(members),
                "client_ids": listed,
                "step_twins_by_client": {client: count for client, count in members[:20]},
                "last_step_magnitude": None if twin is None else round(twin.magnitude, 6),
                "last_step_coordinates": None if twin is None else twin.coordinates,
                "min_clients": cfg.min_clients,
                "ring_size": cfg.ring_size,
            },
            samples=ring.twin_ids,
            labels={"pattern": "sybil"},
        )

    @property
    def tracked_models(self) -> int:
        return len(self._rings)

    def state_dict(self) -> dict[str, Any]:
        watermark = self._rings.watermark
        return {
            "version": _STATE_VERSION,
            "watermark": watermark if math.isfinite(watermark) else None,
            "rings": [
                {
                    "model_id": model_id,
                    "model_version": model_version,
                    "last_ts": last_ts,
                    "size": len(r.clients),
                    "width": int(r.points.shape[1]),
                    "points": pack_array(r.points[: r.filled]),
                    "clients": r.clients[: r.filled],
                    "events": r.events[: r.filled],
                    "position": r.position,
                    "reference": r.reference,
                    "test": [r.test.llr, r.test.queries, r.test.hits, r.test.test_start],
                    "edges": [[a, b, n] for (a, b), n in r.edges.items()],
                    "twin_ids": list(r.twin_ids),
                    "last_twin": None if r.last_twin is None else _twin_json(r.last_twin),
                    "incident": r.test.incident,
                }
                for (model_id, model_version), last_ts, r in self._rings.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"sybil_steps state version {state.get('version')!r} is unknown")
        rows = []
        for raw in state["rings"]:
            ring = _Ring(int(raw["size"]), int(raw["width"]))
            filled = len(raw["clients"])
            points = unpack_array(raw["points"], np.float32).reshape(filled, ring.points.shape[1])
            ring.points[:filled] = points
            ring.norms[:filled] = [_squared_norm(row) for row in ring.points[:filled]]
            ring.codes[:filled] = [_client_code(c) for c in raw["clients"]]
            ring.clients[:filled], ring.events[:filled] = raw["clients"], raw["events"]
            ring.filled, ring.position = filled, int(raw["position"])
            ring.reference = [int(raw["reference"][0]), int(raw["reference"][1])]
            llr, queries, twins, start = raw["test"]
            ring.test = WaldTest(llr, queries, twins, start, raw["incident"])
            ring.edges = {(a, b): int(n) for a, b, n in raw["edges"]}
            ring.twin_ids.extend(raw["twin_ids"])
            twin = raw["last_twin"]
            ring.last_twin = None if twin is None else StepTwin(*twin)
            rows.append((raw["model_id"], raw["model_version"], float(raw["last_ts"]), ring))
        self._rings.restore(state["watermark"], iter(rows))


def _twin_json(twin: StepTwin) -> list[Any]:
    return [twin.client_id, twin.event_id, twin.magnitude, twin.coordinates]
