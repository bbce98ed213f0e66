"""Helpers for tests that run the real `mlwarden worker` process against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from mlwarden.streams.broker import EMBEDDED_PRODUCER_BATCH_BYTES
from mlwarden.streams.lag import consumer_lag
from mlwarden.streams.processes import stop_process_group
from mlwarden.streams.settings import KafkaSettings, TopicNames
from mlwarden.streams.topics import ensure_topics
from mlwarden.streams.watchdog import EXIT_STALLED

T = TypeVar("T")


def isolated_kafka(bootstrap: str, partitions: int = 4) -> KafkaSettings:
    """Kafka settings with topic names no other test uses, and the topics created."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = TopicNames(
        **{name: f"{prefix}.{default}" for name, default in TopicNames().model_dump().items()}
    )
    kafka = KafkaSettings(bootstrap=bootstrap, topics=topics, partitions=partitions)
    ensure_topics(kafka)
    return kafka


def worker_env(kafka: KafkaSettings, app_id: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MLWARDEN_KAFKA__BOOTSTRAP": kafka.bootstrap,
        "MLWARDEN_KAFKA__PARTITIONS": str(kafka.partitions),
        "MLWARDEN_KAFKA__PRODUCER_BATCH_BYTES": EMBEDDED_PRODUCER_BATCH_BYTES,
        "MLWARDEN_WORKER__APP_ID": app_id,
        "MLWARDEN_WORKER__WEB_PORT": "0",
        "MLWARDEN_WORKER__COMMIT_INTERVAL_S": "0.5",
        "MLWARDEN_WORKER__BATCH_WAIT_S": "0.1",
        "MLWARDEN_WORKER__DATA_DIR": str(data_dir),
    }
    for name, value in kafka.topics.model_dump().items():
        env[f"MLWARDEN_KAFKA__TOPICS__{name.upper()}"] = value
    env.update(extra)
    return env


@contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`mlwarden worker` as a child process group, stopped (SIGTERM, then SIGKILL) on exit."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlwarden.streams.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process_group(process, timeout_s=15)


class SupervisedWorker:
    """`mlwarden worker` restarted whenever it exits with EXIT_STALLED, as a supervisor
    (systemd `Restart=on-failure`, Kubernetes) restarts it in production."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._env, self._log_path = env, log_path
        self._stack = ExitStack()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SupervisedWorker:
        self.process = self._stack.enter_context(running_worker(self._env, self._log_path))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def keep_alive(self) -> None:
        """Restart a worker that stopped itself because it stalled; fail on any other exit."""
        assert self.process is not None, "use SupervisedWorker in a with block"
        code = self.process.poll()
        if code == EXIT_STALLED:
            self._stack.close()
            self.process = self._stack.enter_context(running_worker(self._env, self._log_path))
        elif code is not None:
            raise AssertionError(f"the worker exited with code {code}: {self._log_path}")


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, log: Path) -> T:
    """Poll `check` until it returns something truthy; fail with the worker's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def read_all(bootstrap: str, topic: str, timeout_ms: int = 1500) -> list[ConsumerRecord]:
    """Everything on `topic` now, from the beginning (no consumer group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def fully_committed(bootstrap: str, group: str, topic: str) -> bool:
    """Whether `group` has committed every record currently on `topic`."""
    return not any(consumer_lag(bootstrap, group, topic).values())
