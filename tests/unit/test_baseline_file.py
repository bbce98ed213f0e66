"""Baseline files: fitted by the detectors' own code, installed at start, refused when bad.

The model-version detectors (prediction_drift, confidence_shift, feature_drift, mmd_drift)
learn a baseline per version from its first events, or take one fitted offline
(`mlwarden baseline fit`) from `MLWARDEN_DETECTORS__BASELINE_FILE`.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlwarden.detectors.base import BaselineAware, Detector
from mlwarden.detectors.baseline import BaselineFile, fit_baselines, load_baseline_file
from mlwarden.detectors.feature_rows import sampled
from mlwarden.detectors.pipeline import DetectorPipeline
from mlwarden.detectors.registry import DetectorSuiteConfig, build_pipeline, create_detector
from mlwarden.schemas.alert import Alert, Severity
from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.cli import app
from tests.unit import test_detector_conformance as conformance
from tests.unit.drift_streams import T0, clustered_stream, dumped, run
from tests.unit.feature_streams import feature_stream, step

MODEL_VERSION_DETECTORS = ("prediction_drift", "confidence_shift", "feature_drift", "mmd_drift")
KEY = ("m", "2")
FITTED_AT = datetime(2026, 5, 1, tzinfo=UTC)


def default_detector(name: str) -> Detector:
    return create_detector(name, DetectorSuiteConfig())


def fitted_file(detectors: dict[str, Detector], records: Sequence[TelemetryRecord]) -> BaselineFile:
    """What `mlwarden baseline fit` writes, read back from its JSON."""
    result = fit_baselines(detectors, records, source="benign.jsonl", fitted_at=FITTED_AT)
    return BaselineFile.model_validate_json(result.baselines.model_dump_json())


def installed(name: str, baselines: BaselineFile) -> Detector:
    detector = default_detector(name)
    assert isinstance(detector, BaselineAware)
    detector.install_baselines(baselines.baselines_of(name))
    return detector


def exported(detector: Detector) -> dict[str, Any]:
    assert isinstance(detector, BaselineAware)
    return json.loads(json.dumps({"|".join(k): v for k, v in detector.export_baselines().items()}))


# --- streams ---------------------------------------------------------------------------------


def is_feature_detector(name: str) -> bool:
    return name in {"feature_drift", "mmd_drift"}


FIT_S = 300.0  # the recording a file is fitted on: the version's first 5 minutes (staging)
DRIFT_AFTER_S = 5.0  # in production the version drifts from about its 100th event


@cache
def staging_then_production(
    features: bool, drift_after_s: float = DRIFT_AFTER_S
) -> tuple[list[TelemetryRecord], list[TelemetryRecord]]:
    """Version 2's traffic from the same clients: a benign recording, then production, which
    drifts `drift_after_s` after its first event."""
    drift_at = FIT_S + drift_after_s
    if features:
        records = feature_stream(
            14_000, dim=8, seed=32, version="2", shifts=[step(drift_at, [0, 1])]
        )
    else:
        records = clustered_stream(
            700, seed=2, version="2", class0_shift=0.4, top1_shift=0.1, shift_from_s=drift_at
        )
    cut = next(i for i, record in enumerate(records) if record.timestamp >= T0 + FIT_S)
    return records[:cut], records[cut:]


def benign_recording(features: bool) -> list[TelemetryRecord]:
    return staging_then_production(features)[0]


def drifting_version(features: bool) -> list[TelemetryRecord]:
    return staging_then_production(features)[1]


@cache
def drift_then_learned(features: bool) -> list[TelemetryRecord]:
    """One version: benign for its baseline and a while longer, then a drift."""
    if features:
        return feature_stream(11 * 60 * 20, dim=8, seed=5, shifts=[step(360.0, [0, 1])])
    return clustered_stream(900, seed=2, class0_shift=0.4, top1_shift=0.1, shift_from_s=450)


def baseline_cut(name: str, records: Sequence[TelemetryRecord]) -> int:
    """How many records the default detector `name` reads before its baseline is frozen."""
    config = getattr(DetectorSuiteConfig(), name)
    if not is_feature_detector(name):
        return int(config.baseline_size)
    picked = [
        i
        for i, record in enumerate(records)
        if sampled(record.event_id, config.sample_every, config.seed)
    ]
    return picked[config.baseline_size - 1] + 1


# --- the fitted baseline is the learned one ---------------------------------------------------

detectors = pytest.mark.parametrize("name", MODEL_VERSION_DETECTORS)


@detectors
def test_a_fitted_baseline_gives_exactly_the_alerts_of_a_learned_one(name: str) -> None:
    """Learn online then run on, versus fit offline on the same events then install: the same
    alerts, bit for bit (the online and offline paths are one code path)."""
    records = drift_then_learned(is_feature_detector(name))
    cut = baseline_cut(name, records)
    head, tail = records[:cut], records[cut:]

    online = default_detector(name)
    assert run(online, head) == []
    learned_alerts = run(online, tail)
    assert learned_alerts, "the drift must be detected for the comparison to mean anything"

    baselines = fitted_file({name: default_detector(name)}, head)
    assert [v.records for v in baselines.versions] == [cut]
    assert dumped(run(installed(name, baselines), tail)) == dumped(learned_alerts)


@pytest.mark.parametrize(
    "name",
    [
        "prediction_drift",
        "confidence_shift",
        "feature_drift",
        "mmd_drift",
    ],
)
def test_a_listed_version_is_tested_from_its_first_event(name: str) -> None:
    """A version that drifts from its 100th event: the file catches it within about one
    window; learning online takes the drift into the baseline and never reports it."""
    assert_caught_only_with_the_file(name, DRIFT_AFTER_S)


def test_feature_drift_with_the_file_catches_a_drift_that_leaves_its_triggers_some_history() -> (
    None
):
    """From the version's 1000th event (100 sampled): the triggers have seen the reference."""
    assert_caught_only_with_the_file("feature_drift", 50.0)


def assert_caught_only_with_the_file(name: str, drift_after_s: float) -> None:
    features = is_feature_detector(name)
    staging, production = staging_then_production(features, drift_after_s)
    baselines = fitted_file({name: default_detector(name)}, staging)

    assert run(default_detector(name), production) == []
    alerts = run(installed(name, baselines), production)
    assert alerts
    delay = alerts[0].detected_at.timestamp() - (T0 + FIT_S + drift_after_s)
    # About one window after the drift starts: 1000 events (50 s) for the class mix and the
    # confidence, 200 sampled events (2000, 100 s) for MMD; for the per-feature test, a window
    # after its trigger fired.
    assert 0 < delay < {"feature_drift": 200, "mmd_drift": 120}.get(name, 60)


def test_a_rollout_is_still_checked_against_the_previous_version_at_its_first_event() -> None:
    """v1 learned online, v2 from the file: a less confident v2 is one critical regression
    alert at its first event; a v2 like v1 is silent."""
    v1 = clustered_stream(300, seed=41, version="1")
    worse = fitted_file(
        {"confidence_shift": default_detector("confidence_shift")},
        clustered_stream(300, seed=42, version="2", top1_shift=0.1, shift_from_s=0),
    )
    alike = fitted_file(
        {"confidence_shift": default_detector("confidence_shift")},
        clustered_stream(300, seed=42, version="2"),
    )
    v2 = clustered_stream(5, seed=43, version="2", start=400, first_id=10**6)
    detector = installed("confidence_shift", worse)
    [alert] = run(detector, v1 + v2)
    assert alert.labels["rollout"] == "regression"
    assert alert.severity is Severity.CRITICAL
    assert alert.detected_at.timestamp() == pytest.approx(v2[0].timestamp, abs=1e-5)
    assert alert.evidence["sample_event_ids"] == [v2[0].event_id]
    assert run(installed("confidence_shift", alike), v1 + v2) == []


# --- what wins: checkpoint, file, online learning --------------------------------------------


def small_suite(**update: Any) -> DetectorSuiteConfig:
    """The conformance suite's small windows, model-version detectors only (fast to fit)."""
    suite = conformance.small_budget_suite()
    return suite.model_copy(update={"enabled": list(MODEL_VERSION_DETECTORS), **update})


def mixed_stream(
    events: int, *, seed: int, version: str = "2", start: float = 0.0, first_id: int = 0
) -> list[TelemetryRecord]:
    """Records with 3 features and 3-class probabilities: every model-version detector reads
    them. `seed` moves the means, so baselines of different seeds differ."""
    rng = np.random.default_rng(seed)
    features = rng.normal(seed % 3, 1.0, (events, 3)).tolist()
    top = rng.uniform(0.4 + 0.1 * (seed % 3), 1.0, events).tolist()
    labels = rng.integers(0, 3, events).tolist()
    records = []
    for i in range(events):
        rest = (1.0 - top[i]) / 2
        probabilities = [rest, rest, rest]
        probabilities[labels[i]] = top[i]
        records.append(
            TelemetryRecord(
                event_id=f"s{seed}-{first_id + i}",
                timestamp=T0 + start + i / 20,
                model_id="m",
                model_version=version,
                client_id=f"c{i % 11}",
                features=features[i],
                probabilities=probabilities,
                prediction=labels[i],
            )
        )
    return records


def small(name: str) -> Detector:
    return create_detector(name, small_suite())


@detectors
def test_a_checkpointed_baseline_wins_over_the_file_and_a_learning_version_takes_the_file(
    name: str,
) -> None:
    baselines = fitted_file({name: small(name)}, mixed_stream(300, seed=1))
    from_file = exported(installed_small(name, baselines, mixed_stream(1, seed=9)))
    learned = small(name)
    run(learned, mixed_stream(300, seed=2))
    assert exported(learned) != from_file  # two different baselines to tell apart

    # Restart: the pipeline installs the file first, then the checkpoint is loaded.
    restarted = small(name)
    assert isinstance(restarted, BaselineAware)
    restarted.install_baselines(baselines.baselines_of(name))
    restarted.load_state_dict(json.loads(json.dumps(learned.state_dict())))
    run(restarted, mixed_stream(50, seed=3, start=600, first_id=10**5))
    assert exported(restarted) == exported(learned)

    # A version still learning when the file lists it: the file's baseline from its next event.
    learning = small(name)
    run(learning, mixed_stream(30, seed=2))
    assert exported(learning) == {}
    resumed = small(name)
    assert isinstance(resumed, BaselineAware)
    resumed.install_baselines(baselines.baselines_of(name))
    resumed.load_state_dict(learning.state_dict())
    run(resumed, mixed_stream(1, seed=3, start=600, first_id=10**5))
    assert exported(resumed) == from_file

    # A version the file does not list learns online.
    run(resumed, mixed_stream(30, seed=4, version="3", start=700))
    assert "m|3" not in exported(resumed)


def installed_small(
    name: str, baselines: BaselineFile, records: Sequence[TelemetryRecord]
) -> Detector:
    detector = small(name)
    assert isinstance(detector, BaselineAware)
    detector.install_baselines(baselines.baselines_of(name))
    run(detector, records)
    return detector


def test_the_pipeline_installs_the_file_before_the_checkpoint_is_restored(tmp_path: Path) -> None:
    """The worker's restore order (build_pipeline, then load_state_dict): a version frozen in
    the checkpoint keeps its baseline, one the checkpoint never saw takes the file's."""
    path = tmp_path / "baselines.json"
    path.write_text(fitted_file(dict(pipeline_detectors()), file_records()).model_dump_json())
    before = build_pipeline(small_suite())
    before.update(mixed_stream(300, seed=2, version="2"))
    checkpoint = json.loads(json.dumps(before.state_dict()))

    after = build_pipeline(small_suite(baseline_file=path))
    after.load_state_dict(checkpoint)
    after.update(mixed_stream(20, seed=3, version="2", start=900, first_id=10**5))
    after.update(mixed_stream(20, seed=3, version="5", start=920, first_id=10**6))
    baselines = load_baseline_file(path)
    for name, detector in after.detectors.items():
        held = exported(detector)
        assert held["m|2"] == exported(before.detectors[name])["m|2"], name
        assert held["m|5"] == json.loads(json.dumps(baselines.baselines_of(name)[("m", "5")]))


def pipeline_detectors() -> Iterator[tuple[str, Detector]]:
    for name in MODEL_VERSION_DETECTORS:
        yield name, small(name)


@cache
def file_records() -> list[TelemetryRecord]:
    """Versions 2 and 5, each long enough for every small baseline."""
    return mixed_stream(300, seed=1, version="2") + mixed_stream(
        300, seed=5, version="5", start=100, first_id=1000
    )


def test_a_reference_that_does_not_fit_the_traffic_is_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fitted on 3 features, the traffic sends 4: the version learns online, with a warning."""
    baselines = fitted_file({"feature_drift": small("feature_drift")}, mixed_stream(300, seed=1))
    detector = small("feature_drift")
    assert isinstance(detector, BaselineAware)
    detector.install_baselines(baselines.baselines_of("feature_drift"))
    wider = [
        record.model_copy(update={"features": [*(record.features or []), 0.5]})  # type: ignore[misc]
        for record in mixed_stream(20, seed=2)
    ]
    with caplog.at_level(logging.WARNING):
        run(detector, wider)
    assert exported(detector) == {}
    [warning] = caplog.records
    assert "3 features" in warning.getMessage()
    assert "sends 4" in warning.getMessage()


# --- bad files --------------------------------------------------------------------------------


@cache
def valid_document() -> dict[str, Any]:
    """A small valid file (the conformance suite's small windows), as JSON."""
    fitted = fitted_file(dict(pipeline_detectors()), file_records())
    document: dict[str, Any] = json.loads(fitted.model_dump_json())
    return document


def load_with(
    document: Any, path: Path, suite: DetectorSuiteConfig | None = None
) -> DetectorPipeline:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return build_pipeline((suite or small_suite()).model_copy(update={"baseline_file": path}))


def edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = copy.deepcopy(valid_document())
    change(document)
    return document


def entry(document: dict[str, Any], detector: str, index: int = 0) -> Any:
    return document["versions"][index]["baselines"][detector]


BAD_FILES: dict[str, tuple[Callable[[], Any], str]] = {
    "not json": (lambda: "{not json", "not a valid baseline file: Invalid JSON"),
    "another format": (
        lambda: edit(lambda d: d.update(format="mlwarden.state")),
        "format: 'mlwarden.state' is not 'mlwarden.baselines'",
    ),
    "a newer format version": (
        lambda: edit(lambda d: d.update(format_version=2)),
        "format_version: format version 2 is not the one this mlwarden reads (1)",
    ),
    "no versions": (lambda: edit(lambda d: d.pop("versions")), "versions: Field required"),
    "a version twice": (
        lambda: edit(lambda d: d["versions"].append(d["versions"][0])),
        "versions[2]: m v2 is listed twice",
    ),
    "a baseline without its detector": (
        lambda: edit(lambda d: d["detectors"].pop("mmd_drift")),
        "versions[0].baselines: mmd_drift not under `detectors`",
    ),
    "an unknown detector": (
        lambda: edit(lambda d: d["detectors"].update(prado={"config": {}})),
        "detectors.prado: no such detector",
    ),
    "a detector without baselines": (
        lambda: edit(lambda d: d["detectors"].update(query_budget={"config": {}})),
        "detectors.query_budget: this detector takes no fitted baselines",
    ),
    "class counts that are not the baseline's size": (
        lambda: edit(lambda d: entry(d, "prediction_drift")[0].update({"0": 1})),
        "prediction_drift baseline of m v2: class counts add up to",
    ),
    "per-client counts that do not add up": (
        lambda: edit(lambda d: next(iter(entry(d, "prediction_drift")[1].values())).clear()),
        "the per-client counts do not add up to the class counts",
    ),
    "a count that is text": (
        lambda: edit(lambda d: entry(d, "prediction_drift")[0].update({"0": "7"})),
        "prediction_drift baseline of m v2: [0].0: Input should be a valid integer",
    ),
    "a NaN std": (
        lambda: edit(lambda d: entry(d, "confidence_shift")[2].__setitem__(0, float("nan"))),
        "confidence_shift baseline of m v2: [2][0]: Input should be a finite number",
    ),
    "a std below min_std": (
        lambda: edit(lambda d: entry(d, "confidence_shift")[2].__setitem__(1, 0.0)),
        "entropy: mean",
    ),
    "a row that is not base64": (
        lambda: edit(lambda d: entry(d, "feature_drift")["rows"].__setitem__(3, "not base64!")),
        "feature_drift baseline of m v2: a row is not base64",
    ),
    "a row too few": (
        lambda: edit(lambda d: entry(d, "mmd_drift", 1)["rows"].pop()),
        "mmd_drift baseline of m v5: 99 rows, not baseline_size 100",
    ),
    "rows of different widths": (
        lambda: edit(lambda d: entry(d, "feature_drift")["rows"].__setitem__(0, "AAAAAAAAAAA=")),
        "rows must all have the same number of features",
    ),
    "names that are not the features'": (
        lambda: edit(lambda d: entry(d, "feature_drift").update(names=["a", "b"])),
        "names must be 3 distinct names, sorted, one per feature",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_fails_at_start_naming_the_file_and_the_problem(
    case: str, tmp_path: Path
) -> None:
    document, problem = BAD_FILES[case]
    path = tmp_path / "baselines.json"
    suite = small_suite(enabled=[*MODEL_VERSION_DETECTORS, "query_budget"])
    with pytest.raises(ConfigError) as raised:
        load_with(document(), path, suite)
    assert str(raised.value).startswith(f"{path}: ")
    assert problem in str(raised.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(ConfigError, match=r"nowhere\.json: cannot read the baseline file"):
        build_pipeline(small_suite(baseline_file=path))


def test_a_file_fitted_with_other_settings_is_refused_with_how_to_refit(tmp_path: Path) -> None:
    path = tmp_path / "baselines.json"
    suite = small_suite()
    other = suite.model_copy(
        update={"feature_drift": suite.feature_drift.model_copy(update={"baseline_size": 120})}
    )
    with pytest.raises(ConfigError) as raised:
        load_with(valid_document(), path, other)
    message = str(raised.value)
    assert "feature_drift baselines were fitted with baseline_size=100" in message
    assert "this run has baseline_size=120" in message
    assert "mlwarden baseline fit TELEMETRY.jsonl --out FILE" in message
    assert "MLWARDEN_DETECTORS__FEATURE_DRIFT__BASELINE_SIZE" in message


def test_baselines_of_a_disabled_detector_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(valid_document()))
    pipeline = build_pipeline(small_suite(enabled=["prediction_drift"], baseline_file=path))
    assert list(pipeline.detectors) == ["prediction_drift"]
    assert pipeline.install_baseline_file(path, MODEL_VERSION_DETECTORS) == ["prediction_drift"]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 400)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text("ab0=/+", max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab0", max_size=3), inner),
    max_leaves=5,
)


def locations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document (a few per long list: rows and counts are many)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from locations(value, (*path, key))
    elif isinstance(node, list):
        for index in sorted({0, 1, len(node) - 1} & set(range(len(node)))):
            yield from locations(node[index], (*path, index))


def corrupt(document: dict[str, Any], data: st.DataObject) -> None:
    """Replace one place with any JSON, nudge one number, or remove one place."""
    where = data.draw(st.sampled_from(list(locations(document))[1:]))
    parent = document
    for part in where[:-1]:
        parent = parent[part]
    value = parent[where[-1]]
    how = data.draw(st.sampled_from(["replace", "nudge", "remove"]))
    if how == "nudge" and isinstance(value, int | float) and not isinstance(value, bool):
        parent[where[-1]] = value * data.draw(st.sampled_from([-1, 0, 0.5, 2, 1e6, 1e300]))
    elif how == "remove" and isinstance(parent, dict):
        del parent[where[-1]]
    elif how == "remove":
        parent.pop(where[-1])
    else:
        parent[where[-1]] = data.draw(JSON)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_corrupted_file_is_refused_at_start_or_runs(data: st.DataObject) -> None:
    """One place of a valid file replaced by any JSON, a number scaled, or a place removed:
    loading either fails with a ConfigError naming the file, or the baselines it installs
    run (a file that loads cannot break the detectors later)."""
    document = copy.deepcopy(valid_document())
    corrupt(document, data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "baselines.json"
        try:
            pipeline = load_with(document, path)
        except ConfigError as error:
            refused = str(error)
        else:
            refused = None
    if refused is not None:
        assert refused.startswith(f"{path}: ")
        return
    # v1 first, so the rollout checks run against the installed baselines.
    records = [
        *mixed_stream(220, seed=7, version="1"),
        *mixed_stream(80, seed=8, version="2", start=20, first_id=10**4),
        *mixed_stream(80, seed=8, version="5", start=30, first_id=10**5),
    ]
    records.sort(key=lambda record: record.timestamp)
    for start in range(0, len(records), 50):
        for alert in pipeline.update(records[start : start + 50]):
            assert alert.model_version in {"1", "2", "5"}


# --- the command line and the worker ----------------------------------------------------------

CLI_ENV = {"MLWARDEN_DETECTORS__ENABLED": '["prediction_drift", "confidence_shift"]'}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return CliRunner()


def write_jsonl(path: Path, records: Sequence[TelemetryRecord]) -> Path:
    path.write_text("".join(record.model_dump_json() + "\n" for record in records))
    return path


def backtest_alerts(runner: CliRunner, telemetry: Path, env: dict[str, str]) -> list[Alert]:
    out = telemetry.with_suffix(".alerts.jsonl")
    result = runner.invoke(app, ["backtest", str(telemetry), "--alerts-out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    return [Alert.model_validate_json(line) for line in out.read_text().splitlines()]


def test_fit_then_backtest_detects_a_drift_from_the_first_events_of_a_version(
    runner: CliRunner, tmp_path: Path
) -> None:
    benign = write_jsonl(tmp_path / "benign.jsonl", benign_recording(False))
    records = drifting_version(False)
    drifting = write_jsonl(tmp_path / "drifting.jsonl", records)
    baselines = tmp_path / "baselines.json"

    fit = runner.invoke(app, ["baseline", "fit", str(benign), "--out", str(baselines)], env=CLI_ENV)
    assert fit.exit_code == 0, fit.output
    show = runner.invoke(app, ["baseline", "show", str(baselines)], env=CLI_ENV)
    assert show.exit_code == 0, show.output
    assert f"m v2: {len(benign_recording(False)):,} records" in show.stdout
    assert "loads under the current settings: prediction_drift, confidence_shift" in show.stdout

    assert backtest_alerts(runner, drifting, CLI_ENV) == []
    with_file = {**CLI_ENV, "MLWARDEN_DETECTORS__BASELINE_FILE": str(baselines)}
    alerts = backtest_alerts(runner, drifting, with_file)
    assert {alert.detector for alert in alerts} == {"prediction_drift", "confidence_shift"}
    for alert in alerts:
        assert 0 < alert.detected_at.timestamp() - (T0 + FIT_S + DRIFT_AFTER_S) < 60


def test_fit_selects_a_model_version_and_show_and_backtest_refuse_other_settings(
    runner: CliRunner, tmp_path: Path
) -> None:
    v1 = clustered_stream(300, seed=51, version="1", first_id=10**7)
    benign = write_jsonl(tmp_path / "benign.jsonl", v1 + benign_recording(False))
    baselines = tmp_path / "baselines.json"
    fit = runner.invoke(
        app,
        ["baseline", "fit", str(benign), "--out", str(baselines), "--version", "1"],
        env=CLI_ENV,
    )
    assert fit.exit_code == 0, fit.output
    assert [(v.model_id, v.model_version) for v in load_baseline_file(baselines).versions] == [
        ("m", "1")
    ]
    other = {**CLI_ENV, "MLWARDEN_DETECTORS__PREDICTION_DRIFT__BASELINE_SIZE": "2000"}
    show = runner.invoke(app, ["baseline", "show", str(baselines)], env=other)
    assert show.exit_code == 1
    assert "does not load under the current settings" in show.output
    result = runner.invoke(
        app,
        ["backtest", str(benign), "--alerts-out", str(tmp_path / "a.jsonl")],
        env={**other, "MLWARDEN_DETECTORS__BASELINE_FILE": str(baselines)},
    )
    assert isinstance(result.exception, ConfigError)
    assert "baseline_size=3000, this run has baseline_size=2000" in str(result.exception)
    assert not (tmp_path / "a.jsonl").exists()  # refused before reading the telemetry


def test_fit_writes_nothing_when_no_version_fills_a_baseline(
    runner: CliRunner, tmp_path: Path
) -> None:
    short = write_jsonl(tmp_path / "short.jsonl", clustered_stream(60, seed=1, version="2"))
    out = tmp_path / "baselines.json"
    result = runner.invoke(app, ["baseline", "fit", str(short), "--out", str(out)], env=CLI_ENV)
    assert result.exit_code == 1
    assert "no model version filled a baseline" in result.output
    assert not out.exists()


def test_the_worker_refuses_a_bad_file_before_it_touches_kafka(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlwarden.streams import worker
    from mlwarden.streams.settings import Settings

    def no_kafka(*_: object) -> None:
        raise AssertionError("the baseline file must be checked before Kafka is touched")

    monkeypatch.setattr(worker, "ensure_topics", no_kafka)
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "baselines.json"
    bad.write_text(json.dumps(edit(lambda d: d.update(format_version=2))))
    settings = Settings(detectors=small_suite(baseline_file=bad))
    with pytest.raises(ConfigError, match="format version 2"):
        worker.run_worker(settings)
