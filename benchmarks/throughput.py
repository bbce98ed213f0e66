"""Worker throughput as a ratio to a raw consumer, both on one Tansu broker in one run.

    python benchmarks/throughput.py [--records 200000] [--clients 5000]

1. Produces N valid telemetry records (1% malformed, to exercise the DLQ path).
2. Raw baseline: aiokafka consumes all N and decodes them with `decode_batch` (no Faust,
   no detectors) — the ceiling a Python consumer reaches on this broker and machine.
3. Worker: a real `mlwarden worker` process; its rate is measured from its committed offsets
   (first commit to last), so its start-up and group join are not counted against it.
4. Idle: once the worker has caught up, the CPU it and the broker use over `--idle-s` seconds
   with no traffic (a worker whose fetches do not wait would spin here).
Prints records/s for both and the ratio, then the idle CPU. Absolute numbers vary with the
machine; the ratio is what to compare between changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer

from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.decode import RawMessage, decode_batch
from mlwarden.streams.lag import consumer_lag
from mlwarden.streams.processes import stop_process_group
from mlwarden.streams.settings import KafkaSettings
from mlwarden.streams.topics import ensure_topics

PARTITIONS = 4
GROUP = "mlwarden-bench-worker"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the processes of process group `pgid`."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields[0] is field 3 (state); pgrp is field 5
            total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / CLOCK_TICKS


def broker_pgid(bootstrap: str) -> int:
    """The process group of the broker listening on `bootstrap` (found by its command line)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"broker" in argv and f"tcp://{bootstrap}".encode() in argv:
            return os.getpgid(int(cmdline.parent.name))
    raise SystemExit(f"no broker process found for {bootstrap}")


def idle_cpu(pgids: dict[str, int], seconds: float) -> dict[str, float]:
    """Percent of one CPU each process group used over the next `seconds`."""
    before = {name: group_cpu_s(pgid) for name, pgid in pgids.items()}
    begun = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - begun
    return {
        name: 100 * (group_cpu_s(pgid) - before[name]) / elapsed for name, pgid in pgids.items()
    }


def produce(bootstrap: str, topic: str, records: int, clients: int) -> float:
    rng = random.Random(1)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=50,
        batch_size=256 * 1024,
        compression_type="gzip",
        acks=1,
    )
    start_ts = 1_790_000_000.0
    begun = time.perf_counter()
    for index in range(records):
        client = f"c-{rng.randrange(clients):05d}"
        if index % 100 == 99:
            value = b'{"event_id": "broken", "timestamp": "yesterday"}'
        else:
            value = json.dumps(
                {
                    "event_id": f"e-{index}",
                    "timestamp": start_ts + index * 0.001,
                    "model_id": "fraud-scorer",
                    "model_version": "3",
                    "client_id": client,
                    "features": [round(rng.gauss(0, 1), 4) for _ in range(8)],
                    "probabilities": [0.9, 0.1],
                    "prediction": 0,
                    "latency_ms": 3.2,
                }
            ).encode()
        producer.send(topic, key=client.encode(), value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - begun


async def raw_consume(bootstrap: str, topic: str, records: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        seen = 0
        begun = time.perf_counter()
        while seen < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, messages in batches.items():
                decode_batch(
                    RawMessage(m.value, m.key, tp.topic, tp.partition, m.offset) for m in messages
                )
                seen += len(messages)
        return time.perf_counter() - begun
    finally:
        await consumer.stop()


def worker_rate(
    bootstrap: str, topic: str, records: int, workdir: Path, idle_s: float
) -> tuple[float, int, dict[str, float]]:
    env = {
        **os.environ,
        "MLWARDEN_KAFKA__BOOTSTRAP": bootstrap,
        "MLWARDEN_KAFKA__PARTITIONS": str(PARTITIONS),
        "MLWARDEN_WORKER__APP_ID": GROUP,
        "MLWARDEN_WORKER__WEB_PORT": "0",
        "MLWARDEN_WORKER__COMMIT_INTERVAL_S": "1.0",
        "MLWARDEN_WORKER__DATA_DIR": str(workdir / "data"),
        "MLWARDEN_LOG_LEVEL": "WARNING",
    }
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "mlwarden.streams.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"worker died; see {workdir / 'worker.log'}")
            done = records - sum(consumer_lag(bootstrap, GROUP, topic).values())
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= records and first is not None:
                time.sleep(2.0)  # let the last commit and checkpoint settle
                idle = idle_cpu({"worker": worker.pid, "broker": broker_pgid(bootstrap)}, idle_s)
                return now - first[0], records - first[1], idle
            time.sleep(0.05)
        raise SystemExit("worker did not finish within 600 s")
    finally:
        stop_process_group(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU sampling time")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mlwarden-bench-"))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, partitions=PARTITIONS)
        ensure_topics(kafka)
        topic = kafka.topics.telemetry
        produce_s = produce(broker.bootstrap, topic, args.records, args.clients)
        raw_s = asyncio.run(raw_consume(broker.bootstrap, topic, args.records))
        worker_s, worker_records, idle = worker_rate(
            broker.bootstrap, topic, args.records, workdir, args.idle_s
        )
    raw_rate = args.records / raw_s
    if worker_s == 0:  # everything was committed at once: no interval to measure over
        raise SystemExit(f"the worker committed all {args.records:,} at once; raise --records")
    worker_rate_ = worker_records / worker_s
    print(f"records                 {args.records:>12,}  ({args.clients:,} clients, 1% malformed)")
    print(f"produce (kafka-python)  {args.records / produce_s:>12,.0f} records/s")
    print(f"raw aiokafka + decode   {raw_rate:>12,.0f} records/s")
    print(
        f"mlwarden worker         {worker_rate_:>12,.0f} records/s  "
        f"(measured over {worker_records:,} records)"
    )
    print(f"worker / raw            {worker_rate_ / raw_rate:>12.2f}")
    print(
        f"idle CPU over {args.idle_s:g} s     worker {idle['worker']:.1f} %, "
        f"broker {idle['broker']:.1f} % of one core"
    )


if __name__ == "__main__":
    main()
