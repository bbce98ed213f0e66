"""Blacklight: near-duplicate queries, from one client or from a ring of sybil accounts.

Li et al., "Blacklight: Scalable Defense for Neural Networks against Query-Based Black-Box
Attacks" (USENIX Security 2022). Query-based attacks — HopSkipJump and boundary attacks,
score-based gradient estimation, the line searches of extraction attacks — send long runs
of queries that differ from each other by tiny perturbations; natural traffic almost never
does. Each query's fingerprint (`fingerprint.py`: the paper's quantisation step 50/255,
windows of 20, top 50 hashes) is matched against the model's recent fingerprints
(`hash_store.py`); two queries match when they share ≥ 25 of 50 hashes (the paper's T),
scaled down for fingerprints with fewer hashes (a 64-feature query has 45 windows: T = 23).

Two alerts, kind `extraction`:

* per client: `client_matches` of its last `client_window` queries matched one of its own
  earlier queries (the paper flags every matching query; requiring several keeps a client
  that retries a request or two from paging anyone). One alert per incident, fingerprinted
  by the event that opened it; the incident closes after `incident_quiet_seconds` without a
  match.
* sybil: a cluster of chained near-duplicates in which `sybil_clients` different client ids
  each sent at least `sybil_queries_per_client` queries within `sybil_window_seconds` — one
  campaign spread over accounts to stay under per-client limits. One alert per ring of
  accounts (a later cluster sharing any of its ids extends it), for the client whose query
  completed the cluster, labelled {"pattern": "sybil"}, fingerprinted by the model and the
  cluster's smallest shared hash, listing the client ids.

Without `features`, a record's `input_hash` is its whole fingerprint: only exact repeats
match, so perturbed queries go unseen (the evidence says so). Records with neither are
ignored. Time is the event-time watermark only.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, model_validator

from mlwarden.detectors.base import Detector, TelemetryBatch, incident_fingerprint, new_alert
from mlwarden.detectors.client_state import (
    Incident,
    check_state_version,
    drop_idle,
    extend_or_open,
)
from mlwarden.detectors.fingerprint import Fingerprinter, FingerprintLimits, fingerprint_batch
from mlwarden.detectors.hash_store import Cluster, Match, ModelStore, StoreLimits
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord

_SAMPLE_IDS = 5
_MAX_LISTED_CLIENTS = 50
_STATE_VERSION = 1


class BlacklightConfig(FingerprintLimits):
    """Defaults are the paper's CIFAR-10 settings; `models` overrides fingerprinting per model."""

    severity: Severity = Severity.WARNING
    sybil_severity: Severity = Severity.CRITICAL
    salt_seed: int = Field(default=666, ge=0, lt=2**63, description="Set a private one.")
    client_window: int = Field(default=50, ge=1, description="Recent queries per client.")
    client_matches: int = Field(default=10, ge=1, description="Own matches in the window.")
    sybil_clients: int = Field(default=5, ge=2, description="Participants in one cluster.")
    sybil_queries_per_client: int = Field(default=3, ge=1)
    sybil_window_seconds: float = Field(default=900.0, gt=0)
    cluster_members: int = Field(default=512, ge=2, description="Members kept per cluster.")
    ttl_seconds: float = Field(default=900.0, gt=0, description="Query memory, event time.")
    refs_per_hash: int = Field(default=8, ge=1, description="Latest queries per hash.")
    max_queries_per_model: int = Field(default=20_000, ge=100, description="Queries indexed.")
    idle_seconds: float = Field(default=3600.0, gt=0)
    incident_quiet_seconds: float = Field(default=900.0, gt=0)
    models: dict[str, FingerprintLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if self.client_matches > self.client_window:
            raise ValueError("client_matches cannot exceed client_window")
        return self

    def limits_for(self, model_id: str) -> FingerprintLimits:
        return self.models.get(model_id, self)


@dataclass(slots=True)
class _Client:
    last_ts: float
    outcomes: deque[bool]
    matches: int = 0
    incident: Incident | None = None
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=_SAMPLE_IDS))


class BlacklightDetector(Detector):
    """Alerts on clients (and rings of clients) that send runs of near-duplicate queries."""

    name: ClassVar[str] = "blacklight"
    kind: ClassVar[AlertKind] = AlertKind.EXTRACTION
    config_model: ClassVar[type[BaseModel]] = BlacklightConfig

    def __init__(self, config: BlacklightConfig | None = None) -> None:
        self.config = config or BlacklightConfig()
        cfg = self.config
        self._limits = StoreLimits(
            ttl_seconds=cfg.ttl_seconds,
            refs_per_hash=cfg.refs_per_hash,
            max_queries=cfg.max_queries_per_model,
            window_seconds=cfg.sybil_window_seconds,
            cluster_members=cfg.cluster_members,
            min_queries=cfg.sybil_queries_per_client,
        )
        self._stores: dict[str, ModelStore] = {}
        self._printers: dict[str, Fingerprinter] = {}
        self._clients: OrderedDict[tuple[str, str], _Client] = OrderedDict()
        self._watermark = float("-inf")

    def _fingerprinter(self, model_id: str) -> Fingerprinter:
        printer = self._printers.get(model_id)
        if printer is None:
            limits = self.config.limits_for(model_id)
            printer = self._printers[model_id] = Fingerprinter.from_limits(
                limits, self.config.salt_seed
            )
        return printer

    def update(self, batch: TelemetryBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for record, hashes in zip(
            batch, fingerprint_batch(batch, self._fingerprinter), strict=True
        ):
            self._watermark = max(self._watermark, record.timestamp)
            if hashes is not None:
                alerts.extend(self._observe(record, hashes))
        self._expire_idle()
        return alerts

    def _observe(self, record: TelemetryRecord, hashes: list[int]) -> list[Alert]:
        cfg, wm = self.config, self._watermark
        store = self._stores.get(record.model_id)
        if store is None:
            store = self._stores[record.model_id] = ModelStore(self._limits)
        limits = cfg.limits_for(record.model_id)
        needed = min(
            limits.match_threshold, math.ceil(limits.match_threshold * len(hashes) / limits.top_n)
        )
        found = store.match(hashes, record.client_id, wm)
        match = found if found is not None and found.shared >= needed else None
        own = found is not None and found.own_shared >= needed
        alerts: list[Alert] = []
        joined: int | None = None
        cluster: Cluster | None = None
        if match is not None:
            joined, cluster = store.cluster_of(match, wm)
            store.join(cluster, record.timestamp, record.client_id, record.event_id, wm)
        store.add(hashes, record.client_id, record.timestamp, joined)
        client_alert = self._client_step(record, own, needed, len(hashes), found)
        if client_alert is not None:
            alerts.append(client_alert)
        if cluster is None or match is None:
            return alerts
        if cluster.alerted:
            store.refresh_rings(record.client_id, record.timestamp, wm)
        elif cluster.participants >= cfg.sybil_clients:
            cluster.alerted = True
            clients = cluster.participant_ids(cfg.sybil_queries_per_client)
            if not store.known_ring(clients, record.timestamp, wm):
                alerts.append(self._sybil_alert(record, cluster, match, needed, len(hashes)))
        return alerts

    def _client_step(
        self, record: TelemetryRecord, own: bool, needed: int, size: int, found: Match | None
    ) -> Alert | None:
        cfg, wm = self.config, self._watermark
        key = (record.model_id, record.client_id)
        client = self._clients.get(key)
        if client is None or wm - client.last_ts > cfg.idle_seconds:
            client = _Client(last_ts=record.timestamp, outcomes=deque(maxlen=cfg.client_window))
            self._clients[key] = client
        self._clients.move_to_end(key)
        client.last_ts = max(client.last_ts, record.timestamp)
        client.recent_ids.append(record.event_id)
        if len(client.outcomes) == cfg.client_window:
            client.matches -= client.outcomes[0]
        client.outcomes.append(own)
        client.matches += own
        if not own or client.matches < cfg.client_matches:
            return None
        client.incident, opened = extend_or_open(
            client.incident,
            self.name,
            record,
            watermark=wm,
            quiet_seconds=cfg.incident_quiet_seconds,
        )
        if not opened:
            return None
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=cfg.severity,
            fingerprint=client.incident.fingerprint,
            record=record,
            client_id=record.client_id,
            score=float(client.matches),
            threshold=float(cfg.client_matches),
            summary=(
                f"client {record.client_id} sent {client.matches} near-duplicates of its own "
                f"queries among its last {len(client.outcomes)} to {record.model_id} "
                "(Blacklight), as query-based attacks do"
            ),
            evidence={
                **self._mode_evidence(record, needed, size),
                "matches_in_window": client.matches,
                "window_queries": len(client.outcomes),
                "client_matches_threshold": cfg.client_matches,
                "shared_hashes": 0 if found is None else found.own_shared,
                "sample_event_ids": list(client.recent_ids),
            },
            labels={"pattern": "near_duplicates"},
        )

    def _sybil_alert(
        self, record: TelemetryRecord, cluster: Cluster, match: Match, needed: int, size: int
    ) -> Alert:
        cfg = self.config
        clients = cluster.participant_ids(cfg.sybil_queries_per_client)
        identity = f"{cluster.identity:016x}"
        return new_alert(
            detector=self.name,
            kind=self.kind,
            severity=cfg.sybil_severity,
            fingerprint=incident_fingerprint(self.name, record.model_id, "sybil", identity),
            record=record,
            client_id=record.client_id,
            score=float(cluster.participants),
            threshold=float(cfg.sybil_clients),
            summary=(
                f"{cluster.participants} client ids each sent ≥{cfg.sybil_queries_per_client} "
                f"near-duplicate queries of one cluster to {record.model_id} within "
                f"{cfg.sybil_window_seconds:g}s: one campaign split across accounts (Blacklight)"
            ),
            evidence={
                **self._mode_evidence(record, needed, size),
                "shared_hashes": match.shared,
                "client_ids": clients[:_MAX_LISTED_CLIENTS],
                "participants": cluster.participants,
                "clients_in_cluster": len(cluster.counts),
                "cluster_queries": len(cluster.members),
                "cluster_identity": identity,
                "window_seconds": cfg.sybil_window_seconds,
                "sybil_clients_threshold": cfg.sybil_clients,
                "queries_per_client_threshold": cfg.sybil_queries_per_client,
                "sample_event_ids": list(cluster.recent_ids),
            },
            labels={"pattern": "sybil"},
        )

    @staticmethod
    def _mode_evidence(record: TelemetryRecord, needed: int, size: int) -> dict[str, Any]:
        if not record.features:
            return {
                "mode": "input_hash",
                "fingerprint_hashes": size,
                "note": "input_hash only: exact repeats match, perturbed near-duplicates do not",
            }
        return {"mode": "features", "fingerprint_hashes": size, "shared_needed": needed}

    def _expire_idle(self) -> None:
        drop_idle(self._clients, self._watermark - self.config.idle_seconds, lambda c: c.last_ts)
        for model_id, store in list(self._stores.items()):
            store.expire(self._watermark)
            if store.empty:
                del self._stores[model_id]

    @property
    def tracked_clients(self) -> int:
        return len(self._clients)

    @property
    def indexed_queries(self) -> int:
        """Queries whose fingerprints are held, over all models (the bulk of the state)."""
        return sum(len(store) for store in self._stores.values())

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "watermark": self._watermark if (self._clients or self._stores) else None,
            "stores": {model_id: store.state_dict() for model_id, store in self._stores.items()},
            "clients": [
                [
                    model_id,
                    client_id,
                    c.last_ts,
                    [int(o) for o in c.outcomes],
                    None if c.incident is None else c.incident.to_json(),
                    list(c.recent_ids),
                ]
                for (model_id, client_id), c in self._clients.items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_state_version(self.name, state, _STATE_VERSION)
        watermark = state["watermark"]
        self._watermark = float("-inf") if watermark is None else float(watermark)
        self._stores = {
            model_id: ModelStore.from_state(raw, self._limits)
            for model_id, raw in state["stores"].items()
        }
        self._clients.clear()
        window = self.config.client_window
        for model_id, client_id, last_ts, outcomes, incident, ids in state["clients"]:
            recent = deque(bool(o) for o in outcomes[-window:])
            self._clients[(model_id, client_id)] = _Client(
                last_ts=last_ts,
                outcomes=deque(recent, maxlen=window),
                matches=sum(recent),
                incident=Incident.from_json(incident),
                recent_ids=deque(ids, maxlen=_SAMPLE_IDS),
            )
