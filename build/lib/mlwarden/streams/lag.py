"""Consumer-group lag: how many records of a topic a group has not committed yet.

Used by the benchmark to time the worker from the outside and by tests to know when the
worker has handled everything; an operator asks the same question of a live deployment.

The end of each partition is read from the high watermark of a fetch response rather than
from ListOffsets: Tansu 0.6 answers ListOffsets(latest) with the base offset of the last
compressed batch plus one, under-reporting the end (seen here: 1 for a partition of 28).
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from mlwarden.schemas.errors import BrokerError


def consumer_lag(bootstrap: str, group: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Partition → records on `topic` that `group` has not committed (all of them if none)."""
    # A consumer with the group id but no subscription reads the group's offsets without
    # joining the group, so asking does not rebalance the workers being measured.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,  # only the watermark is wanted, not the records
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
        consumer.assign(partitions)
        for tp, offset in committed.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                raise BrokerError(f"no fetch response for {topic} within {timeout_s}s")
            consumer.poll(timeout_ms=200, max_records=1)
        return {tp.partition: consumer.highwater(tp) - committed[tp] for tp in partitions}
    finally:
        consumer.close()
