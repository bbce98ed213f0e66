"""`mlwarden demo` end to end, and its promise to leave no process behind on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "mlwarden.streams.cli", "demo"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent's wait is missing.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def processes_listening_on(port: str) -> list[int]:
    """Pids whose command line names `port`: the Tansu broker of one demo run."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "tansu" in cmdline and f":{port}" in cmdline:
                found.append(int(entry.name))
    return found


def test_demo_alerts_pages_once_and_exits_within_a_minute(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        DEMO,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    assert "ALERT [critical] abuse by query_budget" in result.stdout
    assert (
        result.stdout.count("PAGE [critical] abuse on model fraud-scorer client c-scraper-01") == 1
    )


def test_ctrl_c_stops_worker_and_broker(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        DEMO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    assert demo.stdout is not None
    output = []
    worker_pid = broker_port = None
    for line in demo.stdout:
        output.append(line)
        if match := re.search(r"broker 127\.0\.0\.1:(\d+); worker pid (\d+)", line):
            broker_port, worker_pid = match.group(1), int(match.group(2))
        if line.startswith("publishing"):
            break
    assert worker_pid is not None, "".join(output)
    assert broker_port is not None, "".join(output)
    # Mid-run: traffic is flowing and the worker is joining its consumer group.
    os.kill(demo.pid, signal.SIGINT)
    rest, _ = demo.communicate(timeout=40)
    assert demo.returncode == 130, "".join(output) + rest
    assert "interrupted" in rest
    assert not alive(worker_pid), "the worker outlived the demo"
    assert processes_listening_on(broker_port) == [], "the broker outlived the demo"


def test_broker_command_prints_its_address_and_stops_on_ctrl_c() -> None:
    from kafka import KafkaConsumer

    with subprocess.Popen(
        [sys.executable, "-m", "mlwarden.streams.cli", "broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as broker:
        assert broker.stdout is not None
        bootstrap = broker.stdout.readline().strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), bootstrap
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        assert consumer.topics() is not None  # a real Kafka metadata round trip
        consumer.close()
        broker.send_signal(signal.SIGINT)
        assert broker.wait(timeout=15) == 0
    assert processes_listening_on(bootstrap.rsplit(":", 1)[1]) == []
