"""Consumer-group lag: how many records of a topic a group has not committed yet.

Used by the benchmark to time the worker from the outside, by tests to know when the worker
has handled everything, and by the worker's stall watchdog (streams/watchdog); an operator
asks the same question of a live deployment.

The end of each partition is read from the high watermark of a fetch response rather than
from ListOffsets: Tansu 0.6 answers ListOffsets(latest) with the base offset of the last
compressed batch plus one, under-reporting the end (seen here: 1 for a partition of 28).
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable

from kafka import KafkaConsumer, TopicPartition

from mlwarden.schemas.errors import BrokerError
from mlwarden.streams.watchdog import PartitionKey, Position


def consumer_lag(bootstrap: str, group: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Partition → records on `topic` that `group` has not committed (all of them if none)."""
    positions = group_positions(bootstrap, group, [topic], timeout_s=timeout_s)
    return {partition: end - committed for (_, partition), (committed, end) in positions.items()}


def group_positions(
    bootstrap: str,
    group: str,
    topics: Iterable[str],
    only: Container[PartitionKey] | None = None,
    timeout_s: float = 10.0,
) -> dict[PartitionKey, Position]:
    """(topic, partition) → `group`'s committed offset (0 if none) and the log's end, for every
    partition of `topics`, or of those in `only`."""
    # A consumer with the group id but no subscription reads the group's offsets without
    # joining the group, so asking does not rebalance the workers being measured.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,  # only the watermark is wanted, not the records
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
            if only is None or (topic, p) in only
        ]
        if not partitions:
            return {}
        committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
        consumer.assign(partitions)
        for tp, offset in committed.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                names = ", ".join(sorted({tp.topic for tp in partitions}))
                raise BrokerError(f"no fetch response for {names} within {timeout_s}s")
            consumer.poll(timeout_ms=200, max_records=1)
        return {
            (tp.topic, tp.partition): Position(committed[tp], consumer.highwater(tp))
            for tp in partitions
        }
    finally:
        consumer.close()
