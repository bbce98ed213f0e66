"""Create mlwarden's topics up front, with the partition counts the settings ask for.

Brokers that auto-create topics do so with their own default partition count, which would
silently cap how far the worker can scale out; creating them first avoids that.
"""

from __future__ import annotations

import contextlib

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from mlwarden.schemas.errors import BrokerError
from mlwarden.streams.settings import KafkaSettings


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 15.0) -> list[str]:
    """Create every mlwarden topic that does not exist yet; return the names created."""
    names = list(kafka.topics.model_dump().values())
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap.split(","),
            client_id="mlwarden-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in names if name not in existing]
        topics = kafka.topics
        # The response side reads every alert and command in one place: one partition each.
        single = {topics.alerts, topics.commands, topics.incidents}
        # Latest decision per client, latest summary per incident: what a restart must read.
        compacted = {topics.controls, topics.incidents}
        new_topics = [
            NewTopic(
                name,
                num_partitions=1 if name in single else kafka.partitions,
                replication_factor=kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
            )
            for name in missing
        ]
        if new_topics:
            # Another process may create them between our list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
        return missing
    finally:
        admin.close()
