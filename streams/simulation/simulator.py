"""`simulate`: one scenario, one seed → telemetry records in event-time order, plus ground truth.

Steps: train (or reuse) the production model; draw the benign population and its queries;
let the scenario plan its attacks, rollouts or drift against the production model; merge
everything in event-time order; serve each query with the model version live at its timestamp.
All of that is computed eagerly as arrays (seconds for an hour of traffic); the records
themselves are built, and validated against the telemetry contract, lazily as they are iterated.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np

from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.simulation.benign import BenignConfig, benign_queries, population
from mlwarden.streams.simulation.model import MODEL_ID, Classifier, ModelSpec, digits, trained
from mlwarden.streams.simulation.scenarios import SCENARIOS, Drift, Rollout, Setting
from mlwarden.streams.simulation.traffic import (
    N_CLASSES,
    FloatArray,
    IntArray,
    Queries,
    StrArray,
    as_wire,
    child_rng,
)
from mlwarden.streams.simulation.transforms import scanner_drift
from mlwarden.streams.simulation.truth import GroundTruth, ModelVersionTruth

DEFAULT_START_TS: Final = 1_795_420_800.0
"""2026-11-23T08:00:00Z: a weekday morning, when European traffic is ramping up."""
DEFAULT_DURATION_S: Final = 3600.0
ATTACK_START_FRACTION: Final = 0.4
"""By default the attack starts 40 % into the run: detectors have learnt their baselines."""
PROBABILITY_DECIMALS: Final = 5
_SPARE_ACCOUNTS: Final = 64
_FIRST_VERSION: Final = "1"


@dataclass(frozen=True, slots=True)
class Simulation:
    """A generated run: iterate it for the telemetry records; `truth` says what happened."""

    truth: GroundTruth
    queries: Queries
    versions: StrArray
    probabilities: FloatArray
    predictions: IntArray
    seed: int

    def __iter__(self) -> Iterator[TelemetryRecord]:
        return self.records()

    def __len__(self) -> int:
        return len(self.queries)

    def records(self) -> Iterator[TelemetryRecord]:
        """Every record, in event-time order, validated against the telemetry contract."""
        rng = child_rng(self.seed, "records")
        n = len(self.queries)
        ids = rng.bytes(16 * n)
        latencies = np.round(3.0 * np.exp(rng.normal(0.0, 0.35, size=n)) + 0.4, 2)
        probabilities = np.round(self.probabilities, PROBABILITY_DECIMALS) + 0.0
        for i in range(n):
            features = self.queries.features[i]
            yield TelemetryRecord(
                event_id=str(uuid.UUID(bytes=ids[16 * i : 16 * i + 16], version=4)),
                timestamp=float(self.queries.timestamps[i]),
                model_id=MODEL_ID,
                model_version=str(self.versions[i]),
                client_id=str(self.queries.clients[i]),
                features=features.tolist(),
                input_hash=hashlib.blake2b(features.tobytes(), digest_size=8).hexdigest(),
                probabilities=probabilities[i].tolist(),
                prediction=int(self.predictions[i]),
                latency_ms=float(latencies[i]),
            )


def simulate(
    scenario: str,
    seed: int = 0,
    duration_s: float = DEFAULT_DURATION_S,
    *,
    start_ts: float = DEFAULT_START_TS,
    attack_start_s: float | None = None,
    benign: BenignConfig | None = None,
) -> Simulation:
    """Generate `scenario` over `duration_s` seconds of event time; same arguments, same run.

    `attack_start_s` (seconds after `start_ts`; default 40 % of the run) is when the attack,
    drift or rollout begins. Raises `ConfigError` for an unknown scenario or an empty window.
    """
    plan_of = SCENARIOS.get(scenario)
    if plan_of is None:
        raise ConfigError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if not duration_s > 0.0:
        raise ConfigError(f"duration must be positive, got {duration_s} s")
    offset = ATTACK_START_FRACTION * duration_s if attack_start_s is None else attack_start_s
    if not 0.0 <= offset < duration_s:
        raise ConfigError(f"the attack must start inside the run (0 ≤ {offset} < {duration_s} s)")
    benign = benign or BenignConfig()
    end_ts = start_ts + duration_s
    data = digits()
    production = trained(ModelSpec(seed))
    accounts = _account_ids(child_rng(seed, "accounts"), benign.clients + _SPARE_ACCOUNTS)
    clients = population(child_rng(seed, "population"), accounts[: benign.clients], benign)
    setting = Setting(
        seed, start_ts, end_ts, start_ts + offset, data, production, accounts[benign.clients :]
    )
    plan = plan_of.plan(setting)
    traffic = benign_queries(child_rng(seed, "benign"), clients, data, start_ts, end_ts, benign)
    if plan.drift is not None:
        traffic = _drifted(traffic, plan.drift, child_rng(seed, "drift"))
    merged = Queries.merge([traffic, *plan.attacks])
    # Millisecond timestamps, as servers log them; everything downstream uses these values.
    queries = Queries(np.round(merged.timestamps, 3), merged.clients, merged.features)
    rollouts = (Rollout(_FIRST_VERSION, start_ts, ModelSpec(seed)), *plan.rollouts)
    versions, probabilities = _serve(queries, rollouts)
    is_control = plan_of.attack_kind is None
    attackers = sorted(plan.attackers)
    truth = GroundTruth(
        scenario=scenario,
        summary=plan_of.summary,
        seed=seed,
        model_id=MODEL_ID,
        start_ts=start_ts,
        end_ts=end_ts,
        attack_kind=plan_of.attack_kind,
        attack_start_ts=None if is_control else setting.attack_start_ts,
        attacker_client_ids=attackers,
        expected_alert_kinds=list(plan_of.expected_alert_kinds),
        alert_scope=plan_of.scope,
        model_versions=[_version_truth(rollout) for rollout in rollouts],
        events=len(queries),
        attacker_events=int(np.isin(queries.clients, attackers).sum()),
        benign_clients=benign.clients,
        references=list(plan_of.references),
        parameters=plan.parameters,
    )
    return Simulation(
        truth,
        queries,
        versions,
        probabilities,
        np.asarray(probabilities.argmax(axis=1), dtype=np.int64),
        seed,
    )


def _account_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct account ids like `acct-48213`, in random order."""
    return [f"acct-{number}" for number in rng.choice(90_000, size=count, replace=False) + 10_000]


def _drifted(traffic: Queries, drift: Drift, rng: np.random.Generator) -> Queries:
    severity = drift.severity(traffic.timestamps)
    moved = severity > 0.0
    features = traffic.features.copy()
    features[moved] = as_wire(scanner_drift(features[moved], severity[moved], rng))
    return Queries(traffic.timestamps, traffic.clients, features)


def _serve(queries: Queries, rollouts: tuple[Rollout, ...]) -> tuple[StrArray, FloatArray]:
    """The version live at each query's timestamp, and that version's answer."""
    live = np.zeros(len(queries), dtype=np.int64)
    for index, rollout in enumerate(rollouts):
        live[queries.timestamps >= rollout.at_ts] = index
    probabilities = np.empty((len(queries), N_CLASSES), dtype=np.float64)
    for index, rollout in enumerate(rollouts):
        rows = live == index
        probabilities[rows] = trained(rollout.spec).probabilities(queries.features[rows])
    versions = np.array([rollout.version for rollout in rollouts])[live]
    return versions, probabilities


def _version_truth(rollout: Rollout) -> ModelVersionTruth:
    data = digits()
    model: Classifier = trained(rollout.spec)
    top1 = model.probabilities(data.x_holdout).max(axis=1)
    poisoning = rollout.spec.poisoning
    return ModelVersionTruth(
        version=rollout.version,
        serving_from_ts=rollout.at_ts,
        training_seed=rollout.spec.seed,
        poisoning=None if poisoning is None else poisoning.describe(),
        holdout_accuracy=round(model.accuracy(data.x_holdout, data.y_holdout), 4),
        holdout_mean_top1=round(float(top1.mean()), 4),
    )
