"""What a golden stream is: a detector, its settings, a seeded builder, the alerts it must raise.

Each stream lives in `tests/data/golden/` as three files:

- `<detector>.jsonl`: the telemetry, one record per line, in event-time order;
- `<detector>.meta.json`: how it was made and how to replay it — the seed, the detector
  settings the replay uses (on top of the defaults), the story, and the alerts the stream
  was designed to raise (`expected`, with the reason for each);
- `<detector>.alerts.jsonl`: what the detector raises on it today, `Alert` as JSON without
  `emitted_at` (the only wall-clock field).

`design_problems` holds an alert list to the design: the same number of alerts, in order, each
of the expected kind, severity, model version and client, opening no earlier than the
behaviour it reports started (so the benign stretch before it raised nothing) and not
absurdly late. The generator refuses to write goldens that fail it; the test checks the
committed ones against it too.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.registry import DetectorSuiteConfig, create_detector
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.backtest import run_backtest
from tests.golden.streams import T0, Draft, Rng, records, to_jsonl

DATA = Path(__file__).parents[1] / "data" / "golden"
REGENERATE = "python -m tests.golden.generate --update {detector}"

Golden = dict[str, Any]
"""One alert as committed: `Alert.model_dump(mode="json")` without `emitted_at`."""


def iso(seconds_after_t0: float) -> str:
    return datetime.fromtimestamp(T0 + seconds_after_t0, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Expected:
    """One alert a stream is built to raise, and why."""

    why: str
    kind: AlertKind
    severity: Severity
    model_version: str
    client_id: str | None  # an id, a glob ("ring-*"), or None for a model-wide alert
    after: float  # seconds after T0 at which the behaviour starts: no earlier alert
    within: float  # seconds after `after` by which it must have opened
    labels: dict[str, str] = field(default_factory=dict)  # among the alert's labels

    def to_json(self) -> dict[str, Any]:
        return {
            "why": self.why,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "model_version": self.model_version,
            "client_id": self.client_id,
            "opens_at_or_after": iso(self.after),
            "opens_by": iso(self.after + self.within),
            "labels": self.labels,
        }


@dataclass(frozen=True)
class Scenario:
    """One detector's golden stream: how it is built and what it must raise."""

    detector: str
    model_id: str
    prefix: str  # event ids are <prefix>-00000, -00001, ... in time order
    seed: int
    story: str
    config: dict[str, Any]  # the detector's settings for the replay, over the defaults
    build: Callable[[Rng], list[Draft]]
    expected: tuple[Expected, ...]

    @property
    def stream_path(self) -> Path:
        return DATA / f"{self.detector}.jsonl"

    @property
    def alerts_path(self) -> Path:
        return DATA / f"{self.detector}.alerts.jsonl"

    @property
    def meta_path(self) -> Path:
        return DATA / f"{self.detector}.meta.json"

    def stream_bytes(self) -> bytes:
        drafts = self.build(np.random.default_rng(self.seed))
        return to_jsonl(records(drafts, model_id=self.model_id, prefix=self.prefix))

    def meta(self, stream: bytes) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "model_id": self.model_id,
            "seed": self.seed,
            "regenerate": REGENERATE.format(detector=self.detector),
            "story": self.story,
            "config": self.config,
            "records": stream.count(b"\n"),
            "sha256": hashlib.sha256(stream).hexdigest(),
            "expected": [e.to_json() for e in self.expected],
        }


def suite_for(detector: str, config: dict[str, Any]) -> DetectorSuiteConfig:
    """Only `detector`, with `config` over its defaults (validated like any configuration)."""
    return DetectorSuiteConfig.model_validate({"enabled": [detector], detector: config})


def golden_form(alert: Alert) -> Golden:
    return alert.model_dump(mode="json", exclude={"emitted_at"})


def replay(detector: str, stream: Path, suite: DetectorSuiteConfig, batch: int) -> list[Golden]:
    """The detector alone over the file's records, in file order, `batch` records a call."""
    lines = stream.read_bytes().splitlines()
    recs = [TelemetryRecord.model_validate_json(line) for line in lines]
    instance = create_detector(detector, suite)
    alerts: list[Golden] = []
    for start in range(0, len(recs), batch):
        for alert in instance.update(TelemetryBatch(recs[start : start + batch])):
            alerts.append(golden_form(alert))
    return alerts


def backtest(stream: Path, suite: DetectorSuiteConfig) -> list[Golden]:
    """The product path: decode, event-time order, the pipeline (`mlwarden backtest`)."""
    result = run_backtest(stream, suite)
    assert result.rejected == 0, f"{stream.name}: {result.rejected} records rejected"
    return [golden_form(alert) for alert in result.alerts]


def design_problems(scenario: Scenario, alerts: list[Golden]) -> list[str]:
    """Where `alerts` break the stream's design (empty when they match it)."""
    problems: list[str] = []
    if len(alerts) != len(scenario.expected):
        problems.append(
            f"{len(alerts)} alert(s), the stream is designed to raise {len(scenario.expected)}"
        )
    for index, (want, got) in enumerate(zip(scenario.expected, alerts, strict=False)):
        whom = want.client_id or "model-wide"
        where = f"alert #{index} (designed: {want.kind.value}/{want.severity.value} {whom})"
        checks = {
            "detector": (got["detector"], scenario.detector),
            "model_id": (got["model_id"], scenario.model_id),
            "kind": (got["kind"], want.kind.value),
            "severity": (got["severity"], want.severity.value),
            "model_version": (got["model_version"], want.model_version),
        }
        for name, (value, wanted) in checks.items():
            if value != wanted:
                problems.append(f"{where}: {name} is {value!r}, designed {wanted!r}")
        client = got["client_id"]
        if want.client_id is None:
            if client is not None:
                problems.append(f"{where}: names client {client!r}, designed model-wide")
        elif client is None or not fnmatch.fnmatchcase(client, want.client_id):
            problems.append(f"{where}: names client {client!r}, designed {want.client_id!r}")
        for label, value in want.labels.items():
            if got["labels"].get(label) != value:
                problems.append(
                    f"{where}: label {label}={got['labels'].get(label)!r}, designed {value!r}"
                )
        opened = datetime.fromisoformat(got["detected_at"]).timestamp() - T0
        if opened < want.after:
            problems.append(
                f"{where}: opens at {got['detected_at']}, before the behaviour starts "
                f"({iso(want.after)})"
            )
        elif opened > want.after + want.within:
            problems.append(
                f"{where}: opens at {got['detected_at']}, later than designed "
                f"({iso(want.after + want.within)})"
            )
    return problems
