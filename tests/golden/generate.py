"""Rebuild the golden streams and their expected alerts, and show what changed.

From the repository root::

    python -m tests.golden.generate                     # check every detector; exit 1 on a change
    python -m tests.golden.generate prada ood_queries   # check these only
    python -m tests.golden.generate --update prada      # rewrite prada's files, print the diff

For each detector the stream is rebuilt from its seed (`per_client.py`, `per_model.py`),
replayed through `mlwarden backtest`'s code path with the scenario's settings, and the alerts
are held to the stream's design (`spec.design_problems`: the right number, kind, severity,
client and version, none before the behaviour starts). Then stream, sidecar and alerts are
compared with the committed files and every difference is printed, field by field.

`--update` writes the three files of each detector named. It refuses alerts that break the
design — a benign stretch that now raises something, an attacker no longer caught — unless
`--force` is given: read the diff first, then decide whether the detector, the stream or its
design is what should change. After an intentional change to a detector, update its golden
and commit the new files with the change.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.golden.compare import differences, dump_alerts, read_alerts
from tests.golden.scenarios import SCENARIOS
from tests.golden.spec import DATA, Golden, Scenario, backtest, design_problems, replay, suite_for


@dataclass
class Outcome:
    """One detector's regeneration: the new files and how they differ from the committed."""

    scenario: Scenario
    stream: bytes
    meta: str
    alerts: list[Golden]
    design: list[str]
    changes: list[str] = field(default_factory=list)


def _stream_changes(old: Path, new: bytes) -> list[str]:
    if not old.exists():
        return [f"{old.name}: new file ({len(new.splitlines())} records)"]
    before = old.read_bytes()
    if before == new:
        return []
    old_lines, new_lines = before.splitlines(), new.splitlines()
    first = next(
        (i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
        min(len(old_lines), len(new_lines)),
    )
    return [
        f"{old.name}: {len(new_lines)} records now, {len(old_lines)} committed; "
        f"first difference on line {first + 1}"
    ]


def _meta_changes(old: Path, new: str) -> list[str]:
    if not old.exists():
        return [f"{old.name}: new file"]
    before, after = json.loads(old.read_text()), json.loads(new)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [f"{old.name}: {key} changed" for key in keys]


def regenerate(scenario: Scenario) -> Outcome:
    """Build, replay and compare one detector's golden stream (writes nothing)."""
    stream = scenario.stream_bytes()
    meta = json.dumps(scenario.meta(stream), indent=2, ensure_ascii=False) + "\n"
    suite = suite_for(scenario.detector, scenario.config)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / scenario.stream_path.name
        path.write_bytes(stream)
        alerts = backtest(path, suite)
        alone = replay(scenario.detector, path, suite, batch=97)
    outcome = Outcome(scenario, stream, meta, alerts, design_problems(scenario, alerts))
    mismatch = differences(alerts, alone)
    if mismatch:  # a detector bug, not a golden to write: the two paths must agree
        outcome.design.append("the detector alone and the backtest pipeline disagree:")
        outcome.design += [f"  {line}" for line in mismatch]
    outcome.changes += _stream_changes(scenario.stream_path, stream)
    outcome.changes += _meta_changes(scenario.meta_path, meta)
    if not scenario.alerts_path.exists():
        outcome.changes.append(f"{scenario.alerts_path.name}: new file ({len(alerts)} alerts)")
    else:
        diff = differences(read_alerts(scenario.alerts_path), alerts)
        if diff:
            outcome.changes.append(f"{scenario.alerts_path.name}:")
            outcome.changes += [f"  {line}" for line in diff]
    return outcome


def write(outcome: Outcome) -> None:
    scenario = outcome.scenario
    DATA.mkdir(parents=True, exist_ok=True)
    scenario.stream_path.write_bytes(outcome.stream)
    scenario.meta_path.write_text(outcome.meta)
    scenario.alerts_path.write_text(dump_alerts(outcome.alerts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden.generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("detectors", nargs="*", help="registry names (default: all)")
    parser.add_argument("--update", action="store_true", help="write the new golden files")
    parser.add_argument("--force", action="store_true", help="write even if the design breaks")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.detectors) - set(SCENARIOS))
    if unknown:
        parser.error(f"no golden stream for {unknown}; known: {sorted(SCENARIOS)}")
    status = 0
    for name in args.detectors or list(SCENARIOS):
        outcome = regenerate(SCENARIOS[name])
        if outcome.design:
            print(f"{name}: the alerts break the stream's design ({len(outcome.alerts)} alerts):")
            print("\n".join(f"  {line}" for line in outcome.design))
        if not outcome.changes:
            print(f"{name}: unchanged ({len(outcome.alerts)} alerts)")
            continue
        print(f"{name}: changed")
        print("\n".join(f"  {line}" for line in outcome.changes))
        if not args.update:
            status = max(status, 1)
        elif outcome.design and not args.force:
            print(f"{name}: not written (the design check failed; --force writes anyway)")
            status = 2
        else:
            write(outcome)
            print(f"{name}: written to {DATA}")
    return status


if __name__ == "__main__":
    sys.exit(main())
