"""Backtest: the stream path's detector code, in-process, over a recorded telemetry file.

Records are decoded exactly as the worker decodes them, put in event-time order (a recorded
file may interleave servers whose clocks and flush intervals differ), and fed in batches to
the same `DetectorPipeline`. No broker, no wall clock in detection: the same file always gives
the same alerts. With `MLWARDEN_DETECTORS__BASELINE_FILE` set, the pipeline installs the fitted
baselines before the first record, as the worker does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mlwarden.detectors.registry import DetectorSuiteConfig, build_pipeline
from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.decode import RawMessage, decode_batch

_DECODE_CHUNK = 10_000

Progress = Callable[[str, int], None]
"""Called with (phase, units done since the last call): phases "read" (bytes) and "detect"."""


@dataclass(frozen=True, slots=True)
class BacktestResult:
    records: int
    rejected: int
    alerts: list[Alert]


def read_raw_lines(path: Path, progress: Progress | None = None) -> Iterator[RawMessage]:
    """Each non-blank line of a JSONL file, with its line number as the offset."""
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if progress is not None:
                progress("read", len(line))
            value = line.rstrip(b"\r\n")
            if value.strip():
                yield RawMessage(value=value, topic=str(path), offset=line_number)


def read_records(
    telemetry: Path,
    *,
    rejects_out: IO[str] | None = None,
    progress: Progress | None = None,
) -> tuple[list[TelemetryRecord], int]:
    """A recorded file's valid records, decoded as the worker decodes them, in event-time
    order, and how many lines were rejected (written to `rejects_out` as dead letters)."""
    records: list[TelemetryRecord] = []
    rejected = 0
    lines = read_raw_lines(telemetry, progress)
    while chunk := [line for _, line in zip(range(_DECODE_CHUNK), lines, strict=False)]:
        decoded = decode_batch(chunk)
        records.extend(decoded.records)
        rejected += len(decoded.rejects)
        if rejects_out is not None:
            for dead in decoded.rejects:
                rejects_out.write(dead.model_dump_json() + "\n")
    records.sort(key=lambda record: record.timestamp)  # stable: ties keep file order
    return records, rejected


def run_backtest(
    telemetry: Path,
    suite: DetectorSuiteConfig | None = None,
    *,
    batch_size: int = 2000,
    rejects_out: IO[str] | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Decode `telemetry`, replay it in event-time order, and return every alert."""
    # Built first: a bad baseline file or detector config fails before the file is read.
    pipeline = build_pipeline(suite)
    records, rejected = read_records(telemetry, rejects_out=rejects_out, progress=progress)
    alerts: list[Alert] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        alerts.extend(pipeline.update(batch))
        if progress is not None:
            progress("detect", len(batch))
    return BacktestResult(records=len(records), rejected=rejected, alerts=alerts)
