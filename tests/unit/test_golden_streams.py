"""Golden streams: every registered detector, replayed over its recorded stream, raises exactly
the committed alerts.

Each detector has a small telemetry stream in `tests/data/golden/` — a benign stretch, then
the behaviour it exists to catch — with a sidecar (`<detector>.meta.json`: the settings the
replay uses, the seed, the design) and the expected alerts (`<detector>.alerts.jsonl`).
`tests/golden/` builds them; `tests/golden/per_client.py` and `per_model.py` say, stream by
stream, what each alert is and why. Identity fields (detector, kind, severity, model, version,
client, fingerprint, alert id, labels, detected_at, event ids) must match exactly; numbers in
score, threshold and evidence to a relative 1e-6.

After an intentional change to a detector, regenerate its golden and commit it with the
change: `python -m tests.golden.generate --update <detector>` prints the diff, checks the new
alerts against the stream's design and rewrites the files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlwarden.detectors.registry import DETECTORS
from tests.golden.compare import differences, read_alerts
from tests.golden.scenarios import SCENARIOS
from tests.golden.spec import REGENERATE, backtest, design_problems, replay, suite_for

scenarios = pytest.mark.parametrize("name", sorted(SCENARIOS))


def _explain(name: str, how: str, problems: list[str]) -> str:
    return (
        f"{name}: {how} no longer raises the golden alerts of tests/data/golden/{name}.jsonl\n"
        + "\n".join(f"  {line}" for line in problems)
        + f"\nIntended? Regenerate (prints this diff, then rewrites): "
        f"{REGENERATE.format(detector=name)}"
    )


def test_every_registered_detector_has_a_golden_stream() -> None:
    missing = sorted(set(DETECTORS) - set(SCENARIOS))
    assert not missing, (
        f"no golden stream for {missing}: add a Scenario to tests/golden/per_client.py or "
        "per_model.py, list it in tests/golden/scenarios.py, then run "
        f"{REGENERATE.format(detector=' '.join(missing))}"
    )
    assert not set(SCENARIOS) - set(DETECTORS), "a golden stream for an unregistered detector"


@scenarios
def test_replay_raises_the_golden_alerts(name: str) -> None:
    scenario = SCENARIOS[name]
    meta = json.loads(scenario.meta_path.read_text())
    suite = suite_for(name, meta["config"])
    golden = read_alerts(scenario.alerts_path)
    assert golden, f"{name}: the golden stream must make its detector fire"
    runs = {
        "mlwarden backtest": backtest(scenario.stream_path, suite),
        "the detector alone, 333 records a batch": replay(name, scenario.stream_path, suite, 333),
    }
    for how, alerts in runs.items():
        problems = differences(golden, alerts)
        if problems:
            pytest.fail(_explain(name, how, problems), pytrace=False)


@scenarios
def test_golden_alerts_match_the_stream_design(name: str) -> None:
    # Nothing in the benign stretch, the designed client and version, opened in time: what a
    # regenerated golden must still show (the generator refuses to write one that does not).
    problems = design_problems(SCENARIOS[name], read_alerts(SCENARIOS[name].alerts_path))
    if problems:
        lines = "\n".join(f"  {line}" for line in problems)
        pytest.fail(f"{name}: the golden alerts break the stream's design:\n{lines}", pytrace=False)


@scenarios
def test_the_generator_rebuilds_the_committed_stream(name: str) -> None:
    scenario = SCENARIOS[name]
    stream = scenario.stream_bytes()
    committed = json.loads(scenario.meta_path.read_text())
    assert stream == scenario.stream_path.read_bytes(), (
        f"{name}: tests/golden builds a different stream than the committed one; "
        f"run {REGENERATE.format(detector=name)}"
    )
    assert committed == scenario.meta(stream), (
        f"{name}: {scenario.meta_path.name} is stale; run {REGENERATE.format(detector=name)}"
    )


def test_numbers_compare_to_a_relative_1e_6_and_everything_else_exactly() -> None:
    golden = read_alerts(SCENARIOS["prada"].alerts_path)[0]
    w = golden["evidence"]["shapiro_w"]

    def changed(path: tuple[str, ...], value: object) -> dict[str, Any]:
        alert: dict[str, Any] = json.loads(json.dumps(golden))
        target = alert
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return alert

    assert differences([golden], [changed(("evidence", "shapiro_w"), w * (1 + 1e-9))]) == []
    assert differences([golden], [changed(("evidence", "shapiro_w"), w * (1 + 1e-5))])
    assert differences([golden], [changed(("score",), golden["score"] * (1 + 1e-5))])
    ids = golden["evidence"]["sample_event_ids"]
    assert differences([golden], [changed(("evidence", "sample_event_ids"), ids[::-1])])
    assert differences([golden], [changed(("client_id",), "someone-else")])
    assert differences([golden], [changed(("detected_at",), "2026-09-21T14:20:24.500001Z")])
    assert differences([golden], [golden, golden])
