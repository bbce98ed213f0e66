"""Detection quality of every registered detector on every simulated scenario, in one run.

    python benchmarks/detection.py [--seed 7] [--duration 3600] [--scenario NAME ...] [--keep DIR]

For each scenario of `mlwarden.streams.simulation.SCENARIOS`:
1. simulates it (seeded) and writes the telemetry and its ground truth to a temporary folder;
2. runs `run_backtest` with `DetectorSuiteConfig()` — every detector in the registry, with
   its default configuration — and, as the baseline, with no detector at all (the same
   read + decode + event-time sort, so the ratio isolates the detectors' cost);
3. scores the alerts against the ground truth (`mlwarden.streams.simulation.scoring`: what
   counts as a detection and as a false alarm is documented there).

Prints one row per scenario: detected (yes/no; "-" for the benign controls), event time from
the attack start to the first detecting alert, the attack's queries answered before it,
false alarms per 100k benign events, the detector that fired first, the alert count and
how many of those were neither a detection nor a false alarm ("other": e.g. an attacker
flagged under an unexpected kind), then the backtest
throughput with all detectors and its ratio to the baseline. Absolute rates vary with the
machine; compare ratios and detection columns between changes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlwarden.detectors.registry import DETECTORS, DetectorSuiteConfig
from mlwarden.streams.backtest import run_backtest
from mlwarden.streams.settings import Settings
from mlwarden.streams.simulation.model import ModelSpec, digits, trained
from mlwarden.streams.simulation.scenarios import SCENARIOS
from mlwarden.streams.simulation.scoring import Score, score
from mlwarden.streams.simulation.simulator import simulate
from mlwarden.streams.simulation.writer import write_simulation
from mlwarden.streams.worker import limit_torch_threads


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    score: Score
    records: int
    megabytes: float
    simulate_s: float
    detect_s: float
    baseline_s: float


def run_scenario(name: str, seed: int, duration_s: float, folder: Path) -> Row:
    begun = time.perf_counter()
    simulation = simulate(name, seed, duration_s)
    written = write_simulation(simulation, folder / f"{name}.jsonl")
    simulate_s = time.perf_counter() - begun

    begun = time.perf_counter()
    baseline = run_backtest(written.telemetry, DetectorSuiteConfig(enabled=[]))
    baseline_s = time.perf_counter() - begun
    begun = time.perf_counter()
    result = run_backtest(written.telemetry, DetectorSuiteConfig())
    detect_s = time.perf_counter() - begun
    if result.rejected or baseline.records != result.records:
        raise SystemExit(f"{name}: {result.rejected} simulated records were rejected")

    queries = simulation.queries
    outcome = score(simulation.truth, result.alerts, queries.timestamps, queries.clients)
    return Row(
        name,
        outcome,
        result.records,
        written.telemetry_bytes / 1e6,
        simulate_s,
        detect_s,
        baseline_s,
    )


def _cell(value: float | int | str | None, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'scenario':<24}{'detected':>9}{'ttd s':>9}{'queries':>9}{'FA/100k':>9}  "
        f"{'first detector':<22}{'alerts':>7}{'other':>6}{'records':>9}{'MB':>7}{'sim s':>7}"
        f"{'rec/s all':>11}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        s = row.score
        detected = "-" if s.detected is None else ("yes" if s.detected else "NO")
        print(
            f"{row.scenario:<24}{detected:>9}{_cell(s.time_to_detect_s, '.0f'):>9}"
            f"{_cell(s.exposed_events):>9}{s.false_alarms_per_100k:>9.1f}  "
            f"{_cell(s.first_detector):<22}{s.alerts:>7}{s.other_alerts:>6}{row.records:>9,}{row.megabytes:>7.1f}"
            f"{row.simulate_s:>7.1f}{row.records / row.detect_s:>11,.0f}"
            f"{row.baseline_s / row.detect_s:>7.2f}"
        )
    detect_total = sum(row.detect_s for row in rows)
    baseline_total = sum(row.baseline_s for row in rows)
    records = sum(row.records for row in rows)
    print()
    print(f"backtest, all detectors     {records / detect_total:>10,.0f} records/s")
    print(f"read + decode, no detector  {records / baseline_total:>10,.0f} records/s")
    print(f"all detectors / baseline    {baseline_total / detect_total:>10.2f}  (throughput ratio)")
    print()
    print("alerts by detector per scenario:")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in row.score.alerts_by_detector.items()) or "none"
        print(f"  {row.scenario:<24}{counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of event time")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temp dir")
    args = parser.parse_args()
    limit_torch_threads(Settings().worker.torch_threads)  # as the worker and backtest run
    names: list[str] = args.scenario or list(SCENARIOS)

    data = digits()
    accuracy = trained(ModelSpec(args.seed)).accuracy(data.x_holdout, data.y_holdout)
    print(f"detectors: {', '.join(DetectorSuiteConfig().enabled)} (registered: {len(DETECTORS)})")
    print(
        f"seed {args.seed}, {args.duration:.0f} s of event time per scenario, "
        f"production model accuracy {accuracy:.1%} on {len(data.y_holdout)} held-out digits"
    )
    print()
    with tempfile.TemporaryDirectory(prefix="mlwarden-detection-") as temporary:
        folder = args.keep or Path(temporary)
        rows = []
        for name in names:
            rows.append(run_scenario(name, args.seed, args.duration, folder))
            print(f"  {name}: done", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
