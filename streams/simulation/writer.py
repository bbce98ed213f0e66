"""Write a simulated run to disk: telemetry as canonical JSONL, ground truth next to it.

Each line is `TelemetryRecord.model_dump_json(exclude_none=True)`: the contract's own
serialisation, so what the simulator writes is exactly what a conforming producer would send.
Both files are written to a temporary name and renamed into place, so a reader never sees half
a run, and an interrupted run leaves the previous files intact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlwarden.streams.simulation.simulator import Simulation
from mlwarden.streams.simulation.truth import truth_path


@dataclass(frozen=True, slots=True)
class WrittenRun:
    telemetry: Path
    truth: Path
    records: int
    telemetry_bytes: int


def write_simulation(simulation: Simulation, out: Path) -> WrittenRun:
    """Write `simulation` to `out` (JSONL) and its ground truth to `x.truth.json`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    truth = truth_path(out)
    partial = out.with_name(f".{out.name}.partial")
    truth_partial = truth.with_name(f".{truth.name}.partial")
    records = 0
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as handle:
            for record in simulation:
                handle.write(record.model_dump_json(exclude_none=True))
                handle.write("\n")
                records += 1
        truth_partial.write_text(simulation.truth.model_dump_json(indent=2) + "\n", "utf-8")
        os.replace(partial, out)
        os.replace(truth_partial, truth)
    finally:  # after a failure: no half-written file left behind
        partial.unlink(missing_ok=True)
        truth_partial.unlink(missing_ok=True)
    return WrittenRun(out, truth, records, out.stat().st_size)
