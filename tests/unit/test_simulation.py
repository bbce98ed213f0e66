"""The attack simulator: reproducible, contract-valid telemetry whose attacks are what they claim.

Runs are short (5 minutes of event time, ~7k records) and each scenario is generated once per
module; the production model trains once per process (~1 s).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlwarden.schemas.alert import AlertKind
from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.backtest import read_raw_lines
from mlwarden.streams.decode import decode_batch
from mlwarden.streams.simulation.catalogue import ScenarioName
from mlwarden.streams.simulation.evasion import FGSM_EPSILON, fgsm
from mlwarden.streams.simulation.model import LabelFlip, ModelSpec, digits, trained
from mlwarden.streams.simulation.scenarios import ATTACK_RATE_PER_S, SCENARIOS
from mlwarden.streams.simulation.simulator import Simulation, simulate
from mlwarden.streams.simulation.truth import AlertScope, load_truth, truth_path
from mlwarden.streams.simulation.writer import write_simulation

SEED = 11
DURATION_S = 300.0


@pytest.fixture(scope="module")
def runs() -> dict[str, Simulation]:
    return {name: simulate(name, SEED, DURATION_S) for name in SCENARIOS}


@pytest.fixture(scope="module")
def written(runs: dict[str, Simulation], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("simulated")
    for name, run in runs.items():
        write_simulation(run, directory / f"{name}.jsonl")
    return directory


def _margins(probabilities: np.ndarray) -> np.ndarray:
    ordered = np.sort(probabilities, axis=1)
    return np.asarray(ordered[:, -1] - ordered[:, -2])


@pytest.mark.parametrize("scenario", ["extraction-jacobian", "boundary-probing", "evasion"])
def test_same_seed_gives_the_same_bytes(scenario: str, tmp_path: Path) -> None:
    first = write_simulation(simulate(scenario, SEED, 120.0), tmp_path / "a.jsonl")
    second = write_simulation(simulate(scenario, SEED, 120.0), tmp_path / "b.jsonl")
    other = write_simulation(simulate(scenario, SEED + 1, 120.0), tmp_path / "c.jsonl")
    assert first.telemetry.read_bytes() == second.telemetry.read_bytes()
    assert first.truth.read_bytes() == second.truth.read_bytes()
    assert first.telemetry.read_bytes() != other.telemetry.read_bytes()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_line_honours_the_telemetry_contract(scenario: str, written: Path) -> None:
    path = written / f"{scenario}.jsonl"
    decoded = decode_batch(read_raw_lines(path))
    truth = load_truth(path)
    assert decoded.rejects == []
    assert len(decoded.records) == truth.events > 0
    timestamps = [record.timestamp for record in decoded.records]
    assert timestamps == sorted(timestamps)
    assert truth.start_ts <= timestamps[0]
    assert timestamps[-1] < truth.end_ts
    assert len({record.event_id for record in decoded.records}) == truth.events
    for record in decoded.records[:500]:
        assert record.model_id == "digits-mlp"
        assert isinstance(record.features, list)
        assert len(record.features) == 64
        assert all(0.0 <= value <= 1.0 for value in record.features)
        assert isinstance(record.probabilities, list)
        assert len(record.probabilities) == 10
        assert abs(sum(record.probabilities) - 1.0) < 1e-3
        assert record.prediction == int(np.argmax(record.probabilities))


def test_truth_sits_next_to_the_telemetry(written: Path) -> None:
    path = written / "sybil-extraction.jsonl"
    assert truth_path(path) == written / "sybil-extraction.truth.json"
    raw = json.loads(truth_path(path).read_text())
    assert raw["scenario"] == "sybil-extraction"
    assert raw["seed"] == SEED
    assert raw["expected_alert_kinds"] == ["extraction"]
    assert [version["version"] for version in raw["model_versions"]] == ["1"]


@pytest.mark.parametrize(
    "scenario", [name for name, s in SCENARIOS.items() if s.scope is AlertScope.CLIENT]
)
def test_attackers_appear_only_after_the_attack_starts(
    scenario: str, runs: dict[str, Simulation]
) -> None:
    run = runs[scenario]
    truth = run.truth
    assert truth.attack_start_ts is not None
    assert truth.attacker_client_ids
    attacking = np.isin(run.queries.clients, truth.attacker_client_ids)
    assert attacking.sum() == truth.attacker_events > 0
    assert run.queries.timestamps[attacking].min() >= truth.attack_start_ts
    before = set(run.queries.clients[run.queries.timestamps < truth.attack_start_ts].tolist())
    assert before.isdisjoint(truth.attacker_client_ids)
    window = truth.end_ts - truth.attack_start_ts
    for client, sent in Counter(run.queries.clients[attacking].tolist()).items():
        assert sent / window < 5.0, f"{client} outpaces a paced script: {sent / window:.1f}/s"


def test_sybil_campaign_runs_at_benign_per_account_rates(runs: dict[str, Simulation]) -> None:
    run = runs["sybil-extraction"]
    truth = run.truth
    per_account = Counter(
        run.queries.clients[np.isin(run.queries.clients, truth.attacker_client_ids)]
    )
    assert 20 <= len(per_account) <= 50
    window = truth.end_ts - (truth.attack_start_ts or truth.start_ts)
    assert max(per_account.values()) / window < ATTACK_RATE_PER_S / 20


def test_boundary_probing_leaves_low_margins_and_near_duplicates(
    runs: dict[str, Simulation],
) -> None:
    run = runs["boundary-probing"]
    attacking = np.isin(run.queries.clients, run.truth.attacker_client_ids)
    benign = ~attacking
    assert np.median(_margins(run.probabilities[attacking])) < 0.2
    assert np.median(_margins(run.probabilities[benign])) > 0.8
    steps = np.linalg.norm(np.diff(run.queries.features[attacking], axis=0), axis=1)
    assert np.median(steps) < 0.1  # consecutive queries are near-duplicates


@pytest.mark.parametrize("scenario", ["benign-rollout", "poisoned-rollout"])
def test_rollouts_switch_version_at_the_start_time(
    scenario: str, runs: dict[str, Simulation]
) -> None:
    run = runs[scenario]
    rollout_at = run.truth.model_versions[1].serving_from_ts
    after = run.queries.timestamps >= rollout_at
    assert set(run.versions[after].tolist()) == {"2"}
    assert set(run.versions[~after].tolist()) == {"1"}


@pytest.mark.parametrize("scenario", ["drift-sudden", "drift-gradual"])
def test_drift_moves_benign_inputs_after_the_start(
    scenario: str, runs: dict[str, Simulation]
) -> None:
    run = runs[scenario]
    truth = run.truth
    assert truth.attack_start_ts is not None
    assert truth.attacker_client_ids == []
    late = run.queries.timestamps >= truth.end_ts - 60.0
    before = run.queries.timestamps < truth.attack_start_ts
    background_late = np.mean(run.queries.features[late] == 0.0)
    background_before = np.mean(run.queries.features[before] == 0.0)
    assert background_late < 0.5 * background_before  # the grey background of the new scanner
    control = runs["benign"].queries.features
    assert np.array_equal(run.queries.features[before], control[: before.sum()])


def test_benign_volume_is_heavy_tailed_and_realistic() -> None:
    run = simulate("benign", SEED, 1800.0)
    counts = np.array(sorted(Counter(run.queries.clients.tolist()).values(), reverse=True))
    rate = len(run) / 1800.0
    assert 20.0 <= rate <= 50.0
    assert 150 <= len(counts) <= 200
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.35, f"top 10 % of clients send only {top_tenth:.0%}"
    assert counts[0] > 10 * np.median(counts)
    per_minute = np.bincount(((run.queries.timestamps - run.truth.start_ts) // 60).astype(int))
    assert per_minute.std() / per_minute.mean() > 0.05  # sessions and the day, not a flat line


def test_production_model_is_accurate() -> None:
    data = digits()
    assert trained(ModelSpec(SEED)).accuracy(data.x_holdout, data.y_holdout) > 0.9


def test_fgsm_flips_most_predictions() -> None:
    data = digits()
    model = trained(ModelSpec(SEED))
    correct = model.predict(data.x_holdout) == data.y_holdout
    x, y = data.x_holdout[correct], data.y_holdout[correct]
    flipped = model.predict(fgsm(model, x, y, FGSM_EPSILON)) != y
    assert flipped.mean() > 0.8


def test_poisoned_version_is_worse_on_benign_traffic(runs: dict[str, Simulation]) -> None:
    data = digits()
    run = runs["poisoned-rollout"]
    clean = trained(ModelSpec(SEED))
    poisoned = trained(ModelSpec(run.truth.model_versions[1].training_seed, LabelFlip()))
    clean_accuracy = clean.accuracy(data.x_holdout, data.y_holdout)
    assert poisoned.accuracy(data.x_holdout, data.y_holdout) < clean_accuracy - 0.05
    top1 = run.probabilities.max(axis=1)
    v1, v2 = run.versions == "1", run.versions == "2"
    assert top1[v2].mean() < top1[v1].mean() - 0.1
    assert run.truth.expected_alert_kinds == [AlertKind.CONFIDENCE_SHIFT, AlertKind.DRIFT]
    control = runs["benign-rollout"]
    control_top1 = control.probabilities.max(axis=1)
    v2_mean = control_top1[control.versions == "2"].mean()
    assert abs(v2_mean - control_top1[control.versions == "1"].mean()) < 0.03


def test_records_are_contract_models(runs: dict[str, Simulation]) -> None:
    first = next(iter(runs["evasion"]))
    assert isinstance(first, TelemetryRecord)
    assert first.input_hash is not None
    assert len(first.input_hash) == 16


def test_every_catalogued_name_has_a_scenario() -> None:
    assert set(SCENARIOS) == {str(name) for name in ScenarioName}


def test_unknown_scenario_and_bad_window_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate("extraction-magic", 1, 60.0)
    with pytest.raises(ConfigError, match="inside the run"):
        simulate("evasion", 1, 60.0, attack_start_s=90.0)
