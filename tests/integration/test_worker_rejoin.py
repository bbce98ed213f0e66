"""A worker that loses its group membership comes back and finishes the backlog.

The bug this guards against: aiokafka leaves the group when the application has not polled for
`max_poll_interval`, then refuses to rejoin until it polls again, which Faust never does once
its partitions are revoked; the worker stood still for good. It went over the interval because
one poll returned every prefetched record (the whole backlog) and Faust polls again only once
it has queued them all for the agent (see streams/app and streams/faust_transport).

Here the interval is 2 s against a backlog that takes every detector several times that to
work through, so the old worker left the group within its first poll and never committed the
rest. Then the worker is frozen (SIGSTOP) for twice the interval in the middle of the
backlog. If it froze between polls (its agent busy, the records of its last poll still being
queued), it wakes up past the interval, leaves the group, and must rejoin and commit
everything; frozen inside a poll, it is not idle to aiokafka and carries on, so it is frozen
again after its next commit, until it has left the group once; should it finish the backlog
first, another one is published, since an idle worker waits inside a poll and never leaves. No
assertion on how fast; only that it gets there.

In 4 of 27 local runs, the rebalance that follows (its SyncGroup fails while the broker still
lists the member that left) leaves Faust's fetcher waiting for good a few batches later (see
streams/watchdog). The worker's stall watchdog then exits it with EXIT_STALLED (its commits
stood still for STALL_TIMEOUT_S while records waited) and the test restarts it as a supervisor
would; the restarted worker must finish the backlog, and
replays none of it into the detectors (no client is then seen repeating its own queries).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from mlwarden.streams.broker import EmbeddedBroker
from mlwarden.streams.lag import consumer_lag
from mlwarden.streams.watchdog import EXIT_STALLED

from .workers import (
    SupervisedWorker,
    fully_committed,
    isolated_kafka,
    read_all,
    running_worker,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.integration

RECORDS = 12_000
CLIENTS = 500
MAX_POLL_INTERVAL_S = 2
FROZEN_S = 2 * MAX_POLL_INTERVAL_S
# Each freeze lands between polls about half the time (measured: 7 of 12 single freezes).
MAX_FREEZES = 10
HEARTBEAT_S = 1  # KafkaSettings.heartbeat_interval_s
STALL_TIMEOUT_S = 20
# What the worker logs when it rejoins after going over the interval (streams/faust_transport).
LEFT_THE_GROUP = "left its consumer group"


def publish_backlog(bootstrap: str, topic: str, first: int = 0) -> int:
    """RECORDS valid telemetry records, gzip-batched as a busy producer sends them, so the
    worker's first fetches bring back thousands of records each. Each call (`first` = records
    published before) draws new queries; returns how many were sent."""
    rng = random.Random(3 + first)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, batch_size=256 * 1024, compression_type="gzip"
    )
    for index in range(first, first + RECORDS):
        client = f"c-{rng.randrange(CLIENTS):04d}"
        record = {
            "event_id": f"e-{index}",
            "timestamp": 1_790_000_000.0 + index * 0.01,
            "model_id": "fraud-scorer",
            "model_version": "3",
            "client_id": client,
            "features": [round(rng.gauss(0, 1), 4) for _ in range(8)],
            "probabilities": [0.9, 0.1],
            "prediction": 0,
        }
        producer.send(topic, key=client.encode(), value=json.dumps(record).encode())
    producer.flush()
    producer.close()
    return RECORDS


def freeze(process: subprocess.Popen[bytes], seconds: float) -> None:
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def times_left_the_group(log: Path) -> int:
    return log.read_text(errors="replace").count(LEFT_THE_GROUP)


def test_a_worker_that_left_its_group_rejoins_and_commits_the_backlog(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    kafka = isolated_kafka(broker.bootstrap)
    topic = kafka.topics.telemetry
    group = f"rejoin-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        kafka,
        group,
        tmp_path / "state",
        # Every detector (the default): the cost that made polls late in the first place.
        MLWARDEN_KAFKA__MAX_POLL_INTERVAL_S=str(MAX_POLL_INTERVAL_S),
        MLWARDEN_WORKER__BATCH_SIZE="250",
        MLWARDEN_WORKER__STALL_TIMEOUT_S=str(STALL_TIMEOUT_S),
    )
    log = tmp_path / "worker.log"
    published = publish_backlog(broker.bootstrap, topic)

    def committed() -> int:
        return published - sum(consumer_lag(broker.bootstrap, group, topic).values())

    with SupervisedWorker(env, log) as supervised:
        wait_for(lambda: committed(), 120, "the worker's first commit", log)
        for _ in range(MAX_FREEZES):
            if committed() == published:  # done before it ever left: give it more to do
                published += publish_backlog(broker.bootstrap, topic, first=published)
            before = committed()
            assert supervised.process is not None
            freeze(supervised.process, FROZEN_S)
            time.sleep(HEARTBEAT_S + 1)  # the heartbeat after waking is what leaves the group
            if times_left_the_group(log):
                break
            # It froze inside a poll: let it commit something more, then freeze it again.
            wait_for(
                lambda n=before: supervised.keep_alive() or committed() > n,
                120,
                "a commit after the freeze",
                log,
            )
        wait_for(
            lambda: supervised.keep_alive() or fully_committed(broker.bootstrap, group, topic),
            240,
            f"the worker to commit all {published:,} records after leaving its group",
            log,
        )
        supervised.keep_alive()
    assert times_left_the_group(log) >= 1, f"no freeze made the worker leave its group: {log}"
    # Records are random draws: only a replay fed to the detectors twice repeats a query.
    alerts = [json.loads(alert.value) for alert in read_all(broker.bootstrap, kafka.topics.alerts)]
    self_repeats = [
        alert
        for alert in alerts
        if alert["detector"] == "blacklight" and alert["labels"].get("pattern") != "sybil"
    ]
    assert not self_repeats, f"replayed records were counted twice: {self_repeats[:1]}"


def test_a_worker_whose_commits_stand_still_while_records_wait_exits_for_a_restart(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The watchdog's wiring, on a worker that only commits once an hour (or every 10,000
    acks, Faust's other trigger): its committed offsets stand still for longer than the
    timeout while the backlog waits, and the worker stops itself."""
    kafka = isolated_kafka(broker.bootstrap)
    env = worker_env(
        kafka,
        f"stall-{uuid.uuid4().hex[:6]}",
        tmp_path / "state",
        MLWARDEN_WORKER__COMMIT_INTERVAL_S="3600",
        MLWARDEN_WORKER__STALL_TIMEOUT_S="3",
    )
    log = tmp_path / "worker.log"
    publish_backlog(broker.bootstrap, kafka.topics.telemetry)
    with running_worker(env, log) as worker:
        code = wait_for(lambda: worker.poll(), 120, "the worker to stop itself", log)
    assert code == EXIT_STALLED
    assert "committed nothing for" in log.read_text(errors="replace")
