"""How long a record waits before a consumer that is already waiting for it picks it up.

    python benchmarks/alert_pickup.py [--records 60] [--rate 20] [--fetch-wait-ms 1500,20]

The reproduction of the worker's ~750 ms alert bursts, without mlwarden's worker: one Tansu
broker, a producer stamping each record with the wall clock, and these consumers in turn, each
on its own topic and measured the same way (received − sent, in ms):

- `aiokafka, fetch after produce`: produce (acks) first, then ask for the record: the fetch
  finds it at once. This is how `response_latency.py` measures its broker round trip.
- `aiokafka loop, wait W`: a consumer that keeps a fetch outstanding (`getmany` in a loop, as
  every real consumer does), with `fetch_max_wait_ms=W`.
- `bare Faust app`: a 15-line Faust app in its own process (one agent, plus an idle topic as
  the worker has), with Faust's own consumer (its fetch wait is fixed at 1500 ms), then with
  `mlwarden.streams.faust_transport.use_fetch_max_wait(app, W)`, the worker's setting.

Tansu answers a fetch that found nothing only when it next re-reads its storage, at 1/2, 3/4,
7/8… of the fetch's max wait, so the `loop` rows show pickups of up to W/2. Real Kafka answers
as soon as the record arrives. Every process this starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.processes import start_process_group, stop_process_group

JOIN_TIMEOUT_S = 60.0
IDLE_TOPIC = "pickup.idle"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def row(label: str, latencies: Sequence[float]) -> str:
    figures = "".join(f"{percentile(latencies, q):9.1f}" for q in (50, 90, 99, 100))
    return f"{label:<44}{figures}   (n={len(latencies)})"


def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="mlwarden-pickup")
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


def stamp(seq: int) -> bytes:
    return f"{seq} {time.time():.6f}".encode()


def latency_ms(value: bytes, received: float) -> float:
    return (received - float(value.split()[1])) * 1000


async def send_paced(producer: AIOKafkaProducer, topic: str, records: int, rate: float) -> None:
    started = time.monotonic()
    for seq in range(records):
        pause = started + seq / rate - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        await producer.send(topic, value=stamp(seq))


async def fetch_after_produce(bootstrap: str, records: int, rate: float) -> list[float]:
    topic = f"pickup.after.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_end()
        latencies = []
        for seq in range(records):
            await asyncio.sleep(1 / rate)
            await producer.send_and_wait(topic, value=stamp(seq))
            message = await asyncio.wait_for(consumer.getone(), timeout=10)
            latencies.append(latency_ms(message.value or b"", time.time()))
        return latencies
    finally:
        await consumer.stop()
        await producer.stop()


async def consumer_loop(bootstrap: str, records: int, rate: float, wait_ms: int) -> list[float]:
    topic = f"pickup.loop.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait_ms
    )
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_end()
        latencies: list[float] = []

        async def consume() -> None:
            while len(latencies) < records:
                for messages in (await consumer.getmany(timeout_ms=1000)).values():
                    received = time.time()
                    latencies.extend(latency_ms(m.value or b"", received) for m in messages)

        consuming = asyncio.create_task(consume())
        await asyncio.sleep(wait_ms / 1000 + 0.2)  # a fetch is outstanding from here on
        await send_paced(producer, topic, records, rate)
        await asyncio.wait_for(consuming, timeout=30)
        return latencies
    finally:
        await consumer.stop()
        await producer.stop()


async def faust_app(
    bootstrap: str, records: int, rate: float, wait_ms: int | None, scratch: Path
) -> list[float]:
    """Run the bare Faust app (this file with --faust-child) and time what its agent saw."""
    topic = f"pickup.faust.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    out = scratch / f"{topic}.txt"
    out.touch()
    command = [sys.executable, __file__, "--faust-child", bootstrap, topic, str(out)]
    if wait_ms is not None:
        command += ["--fetch-wait-ms", str(wait_ms)]
    with (scratch / f"{topic}.log").open("ab") as log:
        child = start_process_group(command, env=os.environ, log=log)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        # Warm-up records (sequence −1) until the app has joined its group and consumes.
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not out.read_text():
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit(f"the Faust app did not consume; see {scratch}/{topic}.log")
            await producer.send(topic, value=b"-1 0")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        await send_paced(producer, topic, records, rate)
        deadline = time.monotonic() + 30
        while True:
            lines = [line.split() for line in out.read_text().splitlines()]
            seen = {int(seq): float(received) - float(sent) for received, seq, sent in lines}
            if all(seq in seen for seq in range(records)) or time.monotonic() > deadline:
                return [seen[seq] * 1000 for seq in range(records) if seq in seen]
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        stop_process_group(child, timeout_s=10)


def run_faust_child(bootstrap: str, topic: str, out_path: str, wait_ms: int | None) -> None:
    """The bare Faust app: one agent that writes `received seq sent` per record."""
    import faust

    app = faust.App(
        f"pickup-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="pickup-faust-"),
        web_enabled=False,
        topic_partitions=1,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_max_poll_interval=30,
        value_serializer="raw",
    )
    if wait_ms is not None:
        from mlwarden.streams.faust_transport import use_fetch_max_wait

        use_fetch_max_wait(app, wait_ms)
    out = open(out_path, "a")  # noqa: SIM115 - open for the process's life

    @app.agent(app.topic(topic, value_type=bytes))
    async def pickup(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            out.write(f"{time.time():.6f} {value.decode()}\n")
            out.flush()

    @app.agent(app.topic(IDLE_TOPIC, value_type=bytes))
    async def idle(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            pass

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


async def measure(bootstrap: str, records: int, rate: float, waits: list[int]) -> None:
    rows = [("aiokafka, fetch after produce", await fetch_after_produce(bootstrap, records, rate))]
    for wait in waits:
        latencies = await consumer_loop(bootstrap, records, rate, wait)
        rows.append((f"aiokafka loop, wait {wait} ms", latencies))
    with tempfile.TemporaryDirectory(prefix="mlwarden-pickup-") as scratch:
        latencies = await faust_app(bootstrap, records, rate, None, Path(scratch))
        rows.append(("bare Faust app (Faust's 1500 ms)", latencies))
        for wait in waits:
            latencies = await faust_app(bootstrap, records, rate, wait, Path(scratch))
            rows.append((f"bare Faust app + use_fetch_max_wait({wait})", latencies))
    print(f"pickup latency, record sent → consumer has it (ms); {records} records at {rate:g}/s")
    print(f"{'consumer':<44}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, latencies in rows:
        print(row(label, latencies))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=60, help="records per consumer")
    parser.add_argument("--rate", type=float, default=20.0, help="records sent per second")
    parser.add_argument(
        "--fetch-wait-ms",
        default="1500,20",
        help="comma-separated fetch waits to compare (default: Faust's and mlwarden's)",
    )
    parser.add_argument("--faust-child", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "OUT"))
    args = parser.parse_args(argv)
    waits = [int(w) for w in args.fetch_wait_ms.split(",")]
    if args.faust_child:  # the bare Faust app, started by faust_app() with at most one wait
        run_faust_child(*args.faust_child, waits[0] if len(waits) == 1 else None)
        return
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, [IDLE_TOPIC], partitions=4)
        asyncio.run(measure(broker.bootstrap, args.records, args.rate, waits))


if __name__ == "__main__":
    main()
