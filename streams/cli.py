"""The `mlwarden` command line: one entry point, one small function per command.

Commands parse arguments and print; the work lives in the modules they call.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn

from mlwarden.schemas.errors import MlwardenError
from mlwarden.streams.cli_baseline import baseline_app
from mlwarden.streams.cli_controls import controls_app
from mlwarden.streams.cli_evidence import evidence_app
from mlwarden.streams.cli_playbooks import incidents_app, playbooks_app, silence_app
from mlwarden.streams.cli_support import load_settings as _settings
from mlwarden.streams.simulation.catalogue import ScenarioName

app = typer.Typer(
    name="mlwarden",
    help="Detect attacks on ML inference services and run the response playbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="Contract JSON Schemas.", no_args_is_help=True)
config_app = typer.Typer(help="Resolved configuration.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(config_app, name="config")
app.add_typer(playbooks_app, name="playbooks")
app.add_typer(incidents_app, name="incidents")
app.add_typer(silence_app, name="silence")
app.add_typer(controls_app, name="controls")
app.add_typer(evidence_app, name="evidence")
app.add_typer(baseline_app, name="baseline")

console = Console(stderr=True)


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 9092,
) -> None:
    """Run the embedded Kafka broker (Tansu, in memory) on loopback until Ctrl-C."""
    from mlwarden.streams.broker import EMBEDDED_PRODUCER_BATCH_BYTES, EmbeddedBroker

    embedded = EmbeddedBroker(port=port or None)
    with embedded:
        print(embedded.bootstrap, flush=True)
        console.print(
            f"broker ready: export MLWARDEN_KAFKA__BOOTSTRAP={embedded.bootstrap} "
            f"MLWARDEN_KAFKA__PRODUCER_BATCH_BYTES={EMBEDDED_PRODUCER_BATCH_BYTES} "
            "(memory storage: data is gone when it stops; Ctrl-C to stop)"
        )
        _wait_for_signal(lambda: embedded.running)
        if not embedded.running:
            console.print(f"[red]the broker exited on its own[/red]:\n{embedded.log_tail()}")
            raise typer.Exit(1)


def _wait_for_signal(alive: Callable[[], bool]) -> None:
    """Block until Ctrl-C, SIGTERM, or `alive()` turns false."""
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    # Both handled explicitly: a shell's background job starts with SIGINT ignored.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stop and alive():
        time.sleep(0.2)


@app.command()
def worker() -> None:
    """Consume telemetry, run the detectors, dead-letter bad records, run playbooks on alerts."""
    from mlwarden.streams.worker import run_worker

    run_worker(_settings())


@app.command()
def publish(
    telemetry: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    rate: Annotated[float | None, typer.Option(min=0.001, help="Records per second.")] = None,
) -> None:
    """Replay a recorded JSONL telemetry file onto the telemetry topic, line for line."""
    from mlwarden.streams.replay import replay_file
    from mlwarden.streams.topics import ensure_topics

    settings = _settings()
    ensure_topics(settings.kafka)
    with Progress(
        TextColumn("publish"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("publish", total=None)
        sent = replay_file(
            telemetry,
            settings.kafka.bootstrap,
            settings.kafka.topics.telemetry,
            rate_per_s=rate,
            on_sent=lambda n: progress.advance(task, n),
        )
    console.print(f"published {sent} records to {settings.kafka.topics.telemetry}")


@app.command()
def backtest(
    telemetry: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    alerts_out: Annotated[
        Path, typer.Option("--alerts-out", help="Where to write alerts (JSONL).")
    ],
    rejects_out: Annotated[
        Path | None, typer.Option("--rejects-out", help="Dead letters (JSONL, base64 bytes).")
    ] = None,
) -> None:
    """Run the stream path's detectors over a recorded file, in event-time order, no broker."""
    from mlwarden.streams.backtest import run_backtest
    from mlwarden.streams.worker import limit_torch_threads

    settings = _settings()
    limit_torch_threads(settings.worker.torch_threads)
    started = time.perf_counter()
    with (
        Progress(
            TextColumn("{task.description:>6}"),
            BarColumn(),
            DownloadColumn(),
            console=console,
            transient=True,
        ) as progress,
        rejects_out.open("w", encoding="utf-8") if rejects_out else nullcontext() as rejects,
    ):
        tasks = {
            "read": progress.add_task("read", total=telemetry.stat().st_size),
            "detect": progress.add_task("detect", total=None),
        }
        result = run_backtest(
            telemetry,
            settings.detectors,
            batch_size=settings.worker.batch_size,
            rejects_out=rejects,
            progress=lambda phase, n: progress.advance(tasks[phase], n),
        )
    with alerts_out.open("w", encoding="utf-8") as out:
        for alert in result.alerts:
            out.write(alert.model_dump_json() + "\n")
    elapsed = time.perf_counter() - started
    console.print(
        f"{result.records} records, {result.rejected} rejected, {len(result.alerts)} alerts "
        f"→ {alerts_out} ({result.records / max(elapsed, 1e-9):,.0f} records/s)"
    )


@app.command()
def calibrate(
    benign: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    false_alarm_rate: Annotated[
        float,
        typer.Option(min=1e-9, max=0.5, help="Share of benign clients allowed to alarm, ever."),
    ] = 1e-3,
) -> None:
    """Fit PRADA's thresholds per model on a benign recording; print the setting to export.

    PRADA learns δ and its spread floor for each model version from its first benign
    clients on its own. This fits them instead from every client of a recording, over
    whole lives: use it to test a model from its first event, or to pin thresholds that
    later traffic cannot move. The exported values win over the learned ones.
    """
    from mlwarden.detectors.prada import calibrate_limits
    from mlwarden.streams.backtest import read_raw_lines
    from mlwarden.streams.decode import decode_batch

    settings = _settings()
    decoded = decode_batch(read_raw_lines(benign), settings.worker.max_record_bytes)
    records = sorted(decoded.records, key=lambda record: record.timestamp)
    with console.status(f"replaying {len(records)} benign records through PRADA"):
        limits = calibrate_limits(
            records, false_alarm_rate=false_alarm_rate, config=settings.detectors.prada
        )
    overrides = {model: limit.model_dump() for model, limit in sorted(limits.items())}
    for model, limit in overrides.items():
        console.print(
            f"{model}: delta {limit['delta']}, min_relative_spread {limit['min_relative_spread']}"
        )
    print(f"MLWARDEN_DETECTORS__PRADA__MODELS='{json.dumps(overrides, separators=(',', ':'))}'")


@app.command()
def demo(
    duration: Annotated[float, typer.Option(min=5, help="Seconds of generated traffic.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the traffic generator.")] = 7,
) -> None:
    """Broker + worker + benign traffic + one abusive client: watch the alert and the page."""
    from mlwarden.streams.demo import run_demo

    raise typer.Exit(run_demo(duration_s=duration, seed=seed, console=Console()))


@app.command()
def simulate(
    scenario: Annotated[ScenarioName, typer.Argument(help="The scenario to simulate.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            dir_okay=False,
            help="Telemetry JSONL to write; its ground truth goes next to it (X.truth.json).",
        ),
    ],
    seed: Annotated[int, typer.Option(min=0, help="Same seed, same bytes.")] = 7,
    duration: Annotated[float, typer.Option(min=10, help="Seconds of event time.")] = 3600.0,
) -> None:
    """Simulate benign traffic plus an attack, drift or rollout against a digits model, offline."""
    try:
        from mlwarden.streams.simulation.simulator import simulate as run_scenario
        from mlwarden.streams.simulation.writer import write_simulation
    except ModuleNotFoundError as missing:  # torch / scikit-learn are the simulator's extras
        console.print(
            f"[red]error[/red] the simulator needs {missing.name}: pip install 'mlwarden[simulate]'"
        )
        raise typer.Exit(1) from None

    started = time.perf_counter()
    with console.status(f"simulating {scenario.value} (seed {seed}, {duration:.0f} s)"):
        written = write_simulation(run_scenario(scenario.value, seed, duration), out)
    console.print(
        f"{written.records} records ({written.telemetry_bytes / 1e6:.1f} MB) → {written.telemetry}"
        f", ground truth → {written.truth} ({time.perf_counter() - started:.1f} s)"
    )


@schema_app.command("export")
def schema_export(directory: Annotated[Path, typer.Argument(file_okay=False)]) -> None:
    """Write the JSON Schema of every contract into DIRECTORY."""
    from mlwarden.schemas.export import export_schemas

    for path in export_schemas(directory):
        print(path)


@config_app.command("show")
def config_show() -> None:
    """Print the resolved settings as JSON, secrets masked."""
    print(json.dumps(_settings().masked(), indent=2))


def main() -> None:
    """Entry point: mlwarden errors become one red line and exit code 1, not a traceback."""
    try:
        app()
    except MlwardenError as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
