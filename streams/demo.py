"""`mlwarden demo`: the whole path on one machine with no outside services.

Starts the embedded broker and a real worker process, publishes benign traffic plus one
scraping client through the SDK, and prints the alert and the page as they arrive on the
alerts and actions topics. Everything it started is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from kafka import KafkaConsumer
from rich.console import Console
from rich.markup import escape

from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert
from mlwarden.streams.broker import EMBEDDED_PRODUCER_BATCH_BYTES, EmbeddedBroker
from mlwarden.streams.demo_traffic import ABUSER_ID, TrafficPlan, generate
from mlwarden.streams.processes import start_process_group, stop_process_group
from mlwarden.streams.publisher import TelemetryPublisher
from mlwarden.streams.settings import KafkaSettings
from mlwarden.streams.topics import ensure_topics

_DEMO_BUDGET = {"RATE_PER_MINUTE": "120", "BURST": "60"}
_GRACE_S = 25.0  # after the traffic: time left for a slow worker start to catch up


def run_demo(duration_s: float, seed: int, console: Console) -> int:
    """Run the demo; 0 when the abusive client was alerted on and paged, else 1."""
    # Ctrl-C and SIGTERM both mean "stop everything cleanly", even where SIGINT was ignored on
    # start (a shell's background job inherits SIG_IGN, and Python then skips its handler).
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="mlwarden-demo-"))
    paged = False
    try:
        with contextlib.ExitStack() as running:  # unwinds last-started first: worker, then broker
            console.print("[bold]mlwarden demo[/bold]: starting the embedded Kafka broker (Tansu)")
            broker = running.enter_context(EmbeddedBroker(log_path=workdir / "broker.log"))
            kafka = KafkaSettings(bootstrap=broker.bootstrap, partitions=4)
            ensure_topics(kafka)
            worker = _start_worker(broker.bootstrap, workdir)
            running.callback(_stop_quietly, worker, console)
            console.print(
                f"broker {broker.bootstrap}; worker pid {worker.pid} (log {workdir / 'worker.log'})"
                f"; demo budget {_DEMO_BUDGET['RATE_PER_MINUTE']}/min,"
                f" burst {_DEMO_BUDGET['BURST']}"
            )
            plan = TrafficPlan()
            stop_traffic = threading.Event()
            traffic = threading.Thread(
                target=_publish_traffic,
                args=(
                    broker.bootstrap,
                    kafka.topics.telemetry,
                    duration_s,
                    seed,
                    plan,
                    stop_traffic,
                ),
                daemon=True,
            )
            traffic.start()
            running.callback(traffic.join, 10.0)
            running.callback(stop_traffic.set)
            console.print(
                f"publishing {duration_s:.0f}s of traffic: {plan.benign_clients} benign clients, "
                f"and {ABUSER_ID} scraping at {plan.abuser_rate_per_s:.0f}/s after "
                f"{plan.abuser_starts_after_s:.0f}s"
            )
            paged = _watch(kafka, worker, console, time.monotonic() + duration_s + _GRACE_S)
    except KeyboardInterrupt:
        console.print("interrupted: the worker and the broker are stopped")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous_sigterm)
    if paged:
        console.print("[green]done[/green]: the scraper was detected and on-call was paged once.")
        return 0
    console.print(f"[red]no page seen[/red]; the worker's log is in {workdir / 'worker.log'}")
    return 1


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_quietly(worker: subprocess.Popen[bytes], console: Console) -> None:
    """Stop the worker; a second Ctrl-C or SIGTERM meanwhile must not leave it running."""
    previous = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        if worker.poll() is None:
            console.print("stopping the worker…")
        stop_process_group(worker, timeout_s=15.0)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _start_worker(bootstrap: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MLWARDEN_KAFKA__BOOTSTRAP": bootstrap,
        "MLWARDEN_KAFKA__PARTITIONS": "4",
        "MLWARDEN_KAFKA__PRODUCER_BATCH_BYTES": EMBEDDED_PRODUCER_BATCH_BYTES,
        "MLWARDEN_WORKER__WEB_PORT": "0",
        "MLWARDEN_WORKER__BATCH_WAIT_S": "0.1",
        "MLWARDEN_WORKER__DATA_DIR": str(workdir / "worker-data"),
        **{f"MLWARDEN_DETECTORS__QUERY_BUDGET__{k}": v for k, v in _DEMO_BUDGET.items()},
    }
    with (workdir / "worker.log").open("ab") as log:
        return start_process_group(
            [sys.executable, "-m", "mlwarden.streams.cli", "worker"], env=env, log=log
        )


def _publish_traffic(
    bootstrap: str,
    topic: str,
    duration_s: float,
    seed: int,
    plan: TrafficPlan,
    stop: threading.Event,
) -> None:
    """Publish each record when its timestamp comes due, as a live model server would."""
    start = time.time()
    with TelemetryPublisher(bootstrap, topic=topic, linger_ms=5) as publisher:
        for record in generate(start, duration_s, seed, plan):
            if stop.wait(max(0.0, record.timestamp - time.time())):
                return
            publisher.publish(record)


def _watch(
    kafka: KafkaSettings, worker: subprocess.Popen[bytes], console: Console, deadline: float
) -> bool:
    """Print alerts and step results as they arrive; True once a page step has succeeded."""
    consumer = KafkaConsumer(
        kafka.topics.alerts,
        kafka.topics.actions,
        bootstrap_servers=kafka.bootstrap.split(","),
        group_id=None,
        auto_offset_reset="earliest",
    )
    paged_at: float | None = None
    try:
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                console.print(f"[red]the worker exited (code {worker.returncode})[/red]")
                return False
            for messages in consumer.poll(timeout_ms=250).values():
                for message in messages:
                    if message.topic == kafka.topics.alerts:
                        _show_alert(console, Alert.model_validate_json(message.value))
                    else:
                        action = ActionRecord.model_validate_json(message.value)
                        if _show_action(console, action):
                            paged_at = paged_at or time.monotonic()
            if paged_at is not None and time.monotonic() - paged_at > 3.0:
                return True  # a few seconds more: would a duplicate page show up?
        return paged_at is not None
    finally:
        consumer.close()


def _show_alert(console: Console, alert: Alert) -> None:
    console.print(
        "[bold red]ALERT[/bold red] "
        + escape(
            f"[{alert.severity.value}] {alert.kind.value} by {alert.detector}: {alert.summary} "
            f"(fingerprint {alert.fingerprint[:12]})"
        )
    )


def _show_action(console: Console, action: ActionRecord) -> bool:
    """Print a step's state change; True when it is a delivered page."""
    detail = f": {action.error}" if action.error else ""
    step = f"{action.playbook}#{action.step_index} {action.step_type} → {action.state.value}"
    console.print("[cyan]STEP[/cyan] " + escape(step + detail))
    delivered = action.step_type == "page" and action.state is StepState.SUCCEEDED
    if delivered:
        for pager in action.result.get("delivered", {}).values():
            if "line" in pager:  # the console pager's own line
                console.print("[bold magenta]" + escape(str(pager["line"])) + "[/bold magenta]")
    return delivered
