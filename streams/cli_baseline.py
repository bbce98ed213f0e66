"""`mlwarden baseline fit / show`: per-model-version baselines fitted offline, loaded at start.

`fit` replays a benign recording through the enabled detectors that take fitted baselines
(`detectors.base.BaselineAware`) and writes what each froze, per (model_id, model_version),
to one JSON file (format: `detectors/baseline.py`). Pointing
`MLWARDEN_DETECTORS__BASELINE_FILE` at it makes the worker and backtest test those versions
from their first event. Fit with the settings the worker runs: a file fitted under other
baseline settings is refused at start.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mlwarden.schemas.errors import ConfigError
from mlwarden.streams.cli_support import load_settings

baseline_app = typer.Typer(
    help="Per-model-version baselines fitted offline (MLWARDEN_DETECTORS__BASELINE_FILE).",
    no_args_is_help=True,
)
_console = Console(stderr=True, soft_wrap=True)  # messages stay one line, for grep


def _fail(message: str) -> typer.Exit:
    _console.print(f"[red]error[/red] {message}")
    return typer.Exit(1)


@baseline_app.command("fit")
def fit(
    telemetry: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Baseline file to write.")],
    model: Annotated[str | None, typer.Option("--model", help="Only this model_id.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Only this model_version.")
    ] = None,
) -> None:
    """Fit each model version's baselines on a benign recording and write them to one file."""
    from mlwarden.detectors.base import BaselineAware
    from mlwarden.detectors.baseline import fit_baselines
    from mlwarden.detectors.registry import create_detector
    from mlwarden.streams.backtest import read_records
    from mlwarden.streams.worker import limit_torch_threads

    settings = load_settings()
    suite = settings.detectors
    detectors = {name: create_detector(name, suite) for name in suite.enabled}
    aware = {name: d for name, d in detectors.items() if isinstance(d, BaselineAware)}
    if not aware:
        raise _fail(
            f"none of the enabled detectors ({', '.join(suite.enabled)}) takes fitted baselines"
        )
    limit_torch_threads(settings.worker.torch_threads)
    records, rejected = read_records(telemetry)
    records = [
        r
        for r in records
        if (model is None or r.model_id == model)
        and (version is None or r.model_version == version)
    ]
    if not records:
        raise _fail(f"{telemetry}: no valid record of the selected model/version")
    with _console.status(f"fitting {', '.join(aware)} on {len(records):,} records"):
        result = fit_baselines(
            aware,
            records,
            source=telemetry.name,
            fitted_at=datetime.now(UTC).replace(microsecond=0),
        )
    sizes = ", ".join(f"{name} {d.baseline_config()['baseline_size']}" for name, d in aware.items())
    for (model_id, model_version), count in result.unfitted.items():
        _console.print(
            f"[yellow]skipped[/yellow] {model_id} v{model_version}: {count:,} records did not "
            f"fill any baseline (baseline_size: {sizes}); it will learn online"
        )
    fitted = result.baselines
    if not fitted.versions:
        raise _fail(f"{telemetry}: no model version filled a baseline; nothing written")
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(fitted.model_dump_json(indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, out)  # a reader never sees half a file
    for entry in fitted.versions:
        missing = [name for name in aware if name not in entry.baselines]
        note = f" (not enough data for {', '.join(missing)})" if missing else ""
        _console.print(
            f"{entry.model_id} v{entry.model_version}: {', '.join(entry.baselines)} "
            f"from {entry.records:,} records{note}"
        )
    _console.print(
        f"{len(fitted.versions)} version(s) → {out} ({rejected} rejected lines); load it with "
        f"MLWARDEN_DETECTORS__BASELINE_FILE={out}"
    )


@baseline_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Summarise a baseline file, and check that it loads under the current settings."""
    from mlwarden.detectors.baseline import load_baseline_file
    from mlwarden.detectors.registry import DETECTORS, build_pipeline

    try:
        baselines = load_baseline_file(path)
    except ConfigError as error:
        raise _fail(str(error)) from None
    print(
        f"{path}: {baselines.format} v{baselines.format_version}, fitted {baselines.fitted_at} "
        f"on {baselines.source} ({baselines.records:,} records)"
    )
    for name, section in baselines.detectors.items():
        settings = " ".join(f"{key}={value}" for key, value in section.config.items())
        count = sum(name in entry.baselines for entry in baselines.versions)
        print(f"  {name}: {count} version(s); {settings}")
    for entry in baselines.versions:
        span = ""
        if entry.first_timestamp is not None and entry.last_timestamp is not None:
            first = datetime.fromtimestamp(entry.first_timestamp, UTC).isoformat()
            last = datetime.fromtimestamp(entry.last_timestamp, UTC).isoformat()
            span = f", {first} to {last}"
        print(
            f"  {entry.model_id} v{entry.model_version}: {entry.records:,} records{span}; "
            f"{', '.join(entry.baselines)}"
        )
    suite = load_settings().detectors.model_copy(update={"baseline_file": None})
    pipeline = build_pipeline(suite)
    try:
        taken = pipeline.install_baseline_file(path, DETECTORS)
    except ConfigError as error:
        raise _fail(f"does not load under the current settings: {error}") from None
    print(f"loads under the current settings: {', '.join(taken) or 'no enabled detector'}")
