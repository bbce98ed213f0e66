"""Worker throughput as a ratio to a raw consumer, both on one Tansu broker in one run.

    python benchmarks/throughput.py [--records 200000] [--clients 5000]

1. Produces N valid telemetry records (1% malformed, to exercise the DLQ path).
2. Raw baseline: aiokafka consumes all N and decodes them with `decode_batch` (no Faust,
   no detectors) — the ceiling a Python consumer reaches on this broker and machine.
3. Worker: a real `mlwarden worker` process (every detector, unless MLWARDEN_DETECTORS__ENABLED
   says otherwise); its rate is measured from its committed offsets (first commit to last), so
   its start-up and group join are not counted against it. The offsets are read every
   `--poll-s` through one consumer kept open; the longest stretch without a new commit and the
   times the worker lost its group membership are reported, as a stall is the failure this
   measurement exists to catch.
4. Idle: once the worker has caught up, the CPU it and the broker use over `--idle-s` seconds
   with no traffic (a worker whose fetches do not wait would spin here).
Prints records/s for both and the ratio, then the idle CPU. Absolute numbers vary with the
machine; the ratio is what to compare between changes. The worker dies with this script
(parent-death signal), even when the script is killed outright.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.decode import RawMessage, decode_batch
from mlwarden.streams.lag import consumer_lag
from mlwarden.streams.processes import start_process_group, stop_process_group
from mlwarden.streams.settings import KafkaSettings
from mlwarden.streams.topics import ensure_topics

PARTITIONS = 4
GROUP = "mlwarden-bench-worker"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What the worker logs once per lost group membership it rejoins after
# (streams/faust_transport); a worker that never rejoins only logs failed commits.
REJOINED = b"left its consumer group"
FAILED_COMMIT = b"UnknownMemberIdError"


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


class CommittedOffsets:
    """The group's committed offsets on `topic`, read through one consumer kept open.

    A consumer with the group id but no subscription reads offsets without joining the group.
    (A fresh client per read, 20 reads a second, cost about 40 % of a core, which the worker
    under test then did not get.)
    """

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._partitions = [KafkaTopicPartition(topic, p) for p in range(PARTITIONS)]

    def total(self) -> int:
        return sum(self._consumer.committed(tp) or 0 for tp in self._partitions)

    def close(self) -> None:
        self._consumer.close()


class WorkerRun:
    """What one worker run measured: its rate, and how long it ever went without committing."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None  # (time, records) of the first commit seen
        self.last: tuple[float, int] | None = None  # of the last change seen
        self.longest_stall_s = 0.0
        self.lost_membership = 0
        self.idle: dict[str, float] = {}

    def saw(self, now: float, done: int) -> None:
        if not done:
            return
        if self.first is None:
            self.first = self.last = (now, done)
        elif self.last is not None and done != self.last[1]:
            self.longest_stall_s = max(self.longest_stall_s, now - self.last[0])
            self.last = (now, done)

    def stalled_until(self, now: float) -> None:
        if self.last is not None:
            self.longest_stall_s = max(self.longest_stall_s, now - self.last[0])


def worker_rate(
    bootstrap: str,
    topic: str,
    records: int,
    workdir: Path,
    *,
    idle_s: float,
    poll_s: float,
    timeout_s: float,
    log_level: str,
) -> tuple[WorkerRun, bool]:
    """Run the worker until it has committed `records`; return what was measured and whether
    it got there within `timeout_s`."""
    env = {
        **os.environ,
        "MLWARDEN_KAFKA__BOOTSTRAP": bootstrap,
        "MLWARDEN_KAFKA__PARTITIONS": str(PARTITIONS),
        "MLWARDEN_WORKER__APP_ID": GROUP,
        "MLWARDEN_WORKER__WEB_PORT": "0",
        "MLWARDEN_WORKER__COMMIT_INTERVAL_S": "1.0",
        "MLWARDEN_WORKER__DATA_DIR": str(workdir / "data"),
        "MLWARDEN_LOG_LEVEL": log_level,
    }
    run = WorkerRun()
    log_path = workdir / "worker.log"
    committed = CommittedOffsets(bootstrap, GROUP, topic)
    with log_path.open("wb") as log:
        worker = start_process_group(
            [sys.executable, "-m", "mlwarden.streams.cli", "worker"], env=env, log=log
        )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise SystemExit(f"worker died; see {log_path}")
            done = committed.total()
            now = time.perf_counter()
            run.saw(now, done)
            if done >= records:
                time.sleep(2.0)  # let the last commit and checkpoint settle
                run.idle = idle_cpu(
                    {"worker": worker.pid, "broker": broker_pgid(bootstrap)}, idle_s
                )
                return run, True
            time.sleep(poll_s)
        run.stalled_until(time.perf_counter())
        return run, False
    finally:
        committed.close()
        stop_process_group(worker)
        text = log_path.read_bytes()
        run.lost_membership = max(text.count(REJOINED), int(FAILED_COMMIT in text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU sampling time")
    parser.add_argument(
        "--poll-s", type=float, default=0.25, help="how often the worker's commits are read"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=600.0, help="give up on the worker after this long"
    )
    parser.add_argument("--log-level", default="WARNING", help="the worker's (log in the workdir)")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the worker and broker are stopped in order.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="mlwarden-bench-"))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap, partitions=PARTITIONS)
        ensure_topics(kafka)
        topic = kafka.topics.telemetry
        produce_s = produce(broker.bootstrap, topic, args.records, args.clients)
        on_topic = sum(consumer_lag(broker.bootstrap, GROUP, topic).values())
        if on_topic != args.records:
            raise SystemExit(f"{on_topic:,} records on {topic}, {args.records:,} produced")
        raw_s = asyncio.run(raw_consume(broker.bootstrap, topic, args.records))
        run, finished = worker_rate(
            broker.bootstrap,
            topic,
            args.records,
            workdir,
            idle_s=args.idle_s,
            poll_s=args.poll_s,
            timeout_s=args.timeout_s,
            log_level=args.log_level,
        )
    raw_rate = args.records / raw_s
    print(f"records                 {args.records:>12,}  ({args.clients:,} clients, 1% malformed)")
    print(f"produce (kafka-python)  {args.records / produce_s:>12,.0f} records/s")
    print(f"raw aiokafka + decode   {raw_rate:>12,.0f} records/s")
    print(
        f"longest commit gap      {run.longest_stall_s:>12.1f} s  "
        f"(lost group membership {run.lost_membership} times; log: {workdir / 'worker.log'})"
    )
    if not finished:
        done = run.last[1] if run.last else 0
        raise SystemExit(
            f"the worker committed {done:,} of {args.records:,} records in {args.timeout_s:g} s"
        )
    assert run.first is not None
    assert run.last is not None
    worker_s, worker_records = run.last[0] - run.first[0], run.last[1] - run.first[1]
    if worker_s == 0:  # everything was committed at once: no interval to measure over
        raise SystemExit(f"the worker committed all {args.records:,} at once; raise --records")
    worker_rate_ = worker_records / worker_s
    print(
        f"mlwarden worker         {worker_rate_:>12,.0f} records/s  "
        f"(measured over {worker_records:,} records)"
    )
    print(f"worker / raw            {worker_rate_ / raw_rate:>12.2f}")
    print(
        f"idle CPU over {args.idle_s:g} s     worker {run.idle['worker']:.1f} %, "
        f"broker {run.idle['broker']:.1f} % of one core"
    )


if __name__ == "__main__":
    main()
