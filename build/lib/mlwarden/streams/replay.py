"""Replay a recorded telemetry file onto the telemetry topic, byte for byte.

Unlike `TelemetryPublisher`, replay sends every line as it is — malformed ones included, so a
recording exercises the worker's dead-letter path — and blocks rather than drop when the
broker is slow: a replay must deliver the whole file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaProducer

from mlwarden.streams.backtest import read_raw_lines

_PACE_EVERY = 50  # check the clock every N records: cheap, and smooth enough at any rate


def client_key(value: bytes) -> bytes | None:
    """The partition key of a raw record: its client_id when one can be read, else none."""
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    client_id = parsed.get("client_id") if isinstance(parsed, dict) else None
    return client_id.encode() if isinstance(client_id, str) else None


def replay_file(
    path: Path,
    bootstrap: str,
    topic: str,
    *,
    rate_per_s: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send every non-blank line of `path`, at most `rate_per_s` per second; return the count."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        linger_ms=20,
        compression_type="gzip",
        acks="all",
        retries=5,
        max_block_ms=60_000,
    )
    sent = 0
    started = monotonic()
    try:
        for message in read_raw_lines(path):
            producer.send(topic, key=client_key(message.value), value=message.value)
            sent += 1
            if on_sent is not None:
                on_sent(1)
            if rate_per_s and sent % _PACE_EVERY == 0:
                ahead = started + sent / rate_per_s - monotonic()
                if ahead > 0:
                    sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    return sent
