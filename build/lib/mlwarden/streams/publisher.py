"""The producer SDK: a model server publishes one telemetry record per inference.

    with TelemetryPublisher("kafka:9092") as telemetry:
        telemetry.publish_inference(model_id="fraud", model_version="7", client_id=key_id,
                                    prediction=label, probabilities=probs.tolist())

Records go to `mlwarden.telemetry` keyed by `client_id` (UTF-8), so every client's queries land in
one partition; the value is the record's canonical JSON (`model_dump_json(exclude_none=True)`).

Delivery policy: telemetry must never slow down or break inference.

- `publish` only encodes the record and appends it to an in-memory buffer; a background thread
  hands records to kafka-python, which batches, compresses and retries them. `publish` never
  waits for the network and never raises because the broker is away.
- While the broker is unreachable (including when the model server starts before it), records
  wait in that buffer, bounded by `buffer_bytes` (key + value bytes of every record not yet
  acknowledged), and are delivered when the broker returns.
- When the buffer is full, `publish` returns False and counts the record in `stats.dropped`; a
  warning is logged at most once per 10 s, with the number dropped since the last one.
- A record not acknowledged within `delivery_timeout_ms` of its publication (or refused by the
  broker for good) counts in `stats.failed` and is logged, at most once per 10 s. So does every
  record still undelivered when `close(timeout_s)` gives up.
- Invalid records are the caller's bug: `publish_inference` raises pydantic's ValidationError.
- A retry after a lost acknowledgement can duplicate a record, and retries can reorder records
  within a partition: `event_id` is the dedup key downstream.

kafka-python itself logs every failed reconnect at ERROR with a traceback (every 2 s or so while
the broker is away); model servers usually set the `kafka` logger to CRITICAL and watch `stats`
and this module's rate-limited messages instead.

Facts about kafka-python 3.0 this module is built on (read from its source, checked against
Tansu and an unreachable port):

- There is no `buffer_memory` setting any more (the constructor rejects it) and the record
  accumulator is unbounded, so the byte bound is enforced here.
- `max_block_ms` bounds only `send()`'s wait for topic metadata. Without metadata (broker
  unreachable since start) `send()` cannot pick a partition and raises KafkaTimeoutError, so
  `send()` is called from the background thread, never from `publish`.
- Without `api_version` the constructor blocks up to `bootstrap_timeout_ms` probing the broker
  and raises if it is down. A pinned `api_version` skips the probe; it is a ceiling: each
  connection still negotiates ApiVersions and uses the lower of the two. Tansu reports (3, 9).
- The idempotent producer (on by default) turns into a permanently failed producer when a broker
  answers its epoch bump with an error, as a Tansu with memory storage does after a restart, so
  it is off here; acks stay "all".
- `KafkaProducer.close(timeout)` raises KafkaTimeoutError from its internal flush while records
  are pending and never force-closes; `close` here works around it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from mlwarden.schemas.errors import ConfigError
from mlwarden.schemas.telemetry import TelemetryRecord

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas, at import, with importlib.resources helpers
    # deprecated since Python 3.11; model servers (and our tests) may turn warnings into errors.
    warnings.filterwarnings("ignore", r"(read|open)_text is deprecated", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError
    from kafka.util import ensure_valid_topic_name

DEFAULT_TOPIC: Final = "mlwarden.telemetry"
DEFAULT_API_VERSION: Final = (3, 9)

_LOG_INTERVAL_S: Final = 10.0
# How long the background thread lets kafka-python wait for topic metadata per attempt; it also
# bounds how long `close` may wait for that thread beyond its own timeout.
_METADATA_WAIT_MS: Final = 250
_RECONNECT_BACKOFF_MAX_MS: Final = 2_000  # kafka-python's default (30 s) delays recovery
_FORCE_CLOSE_WAIT_S: Final = 2.0
# Settings whose change would break the contract above.
_RESERVED_SETTINGS: Final = frozenset(
    {"bootstrap_servers", "key_serializer", "value_serializer", "max_block_ms"}
)

log = logging.getLogger(__name__)


def encode_record(record: TelemetryRecord) -> tuple[bytes, bytes]:
    """The Kafka key (`client_id`, UTF-8) and value (canonical JSON, nulls left out) of a record."""
    return record.client_id.encode(), record.model_dump_json(exclude_none=True).encode()


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """A snapshot of a publisher's counters since it was created.

    `sent` records were accepted by `publish`; each then ends `acked` by the broker or `failed`.
    `dropped` records were refused by `publish` (buffer full, or publisher closed).
    """

    sent: int
    acked: int
    dropped: int
    failed: int
    buffered_bytes: int

    @property
    def pending(self) -> int:
        """Records accepted and not yet acknowledged or failed."""
        return self.sent - self.acked - self.failed


@dataclass(frozen=True, slots=True)
class _Queued:
    key: bytes
    value: bytes
    queued_at: float  # time.monotonic()

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value)


class _RateLimitedLog:
    """Logs a message at most once per interval, counting the occurrences it held back."""

    def __init__(self, level: int, interval_s: float = _LOG_INTERVAL_S) -> None:
        self._level = level
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last = -interval_s
        self._held = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            self._held += 1
            if now - self._last < self._interval_s:
                return
            count, self._held, self._last = self._held, 0, now
        log.log(self._level, message + " (%d since the previous such message)", *args, count)


class TelemetryPublisher:
    """Publishes telemetry records to Kafka without ever blocking the inference path.

    Thread-safe: one instance serves every request thread of a model server. See the module
    docstring for the buffering and drop policy; `stats` says how it went.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        compression: str | None = "gzip",
        linger_ms: int = 20,
        batch_bytes: int = 64 * 1024,
        buffer_bytes: int = 32 * 1024 * 1024,
        delivery_timeout_ms: int = 300_000,
        api_version: tuple[int, ...] = DEFAULT_API_VERSION,
        client_id: str = "mlwarden-publisher",
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        """Create the producer; it connects in the background, so a down broker is no error.

        `producer_config` passes further KafkaProducer settings (security_protocol, sasl_*,
        ssl_*, acks, ...) and overrides the defaults chosen here, except the reserved ones.
        """
        if buffer_bytes <= 0:
            raise ConfigError(f"buffer_bytes must be positive, got {buffer_bytes}")
        try:
            ensure_valid_topic_name(topic)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"topic {topic!r}: {exc}") from None
        reserved = _RESERVED_SETTINGS & set(producer_config or {})
        if reserved:
            raise ConfigError(
                f"producer_config may not set {sorted(reserved)}: the publisher owns them"
            )
        self.topic = topic
        self.buffer_bytes = buffer_bytes
        self._delivery_timeout_s = delivery_timeout_ms / 1000
        settings: dict[str, Any] = {
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,
            "compression_type": compression,
            "linger_ms": linger_ms,
            "batch_size": batch_bytes,
            "delivery_timeout_ms": delivery_timeout_ms,
            "api_version": api_version,
            "reconnect_backoff_max_ms": _RECONNECT_BACKOFF_MAX_MS,
            **(producer_config or {}),
        }
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers, max_block_ms=_METADATA_WAIT_MS, **settings
        )

        self._lock = threading.Lock()
        self._queue_changed = threading.Condition(self._lock)  # publish -> background thread
        self._handed_off = threading.Condition(self._lock)  # background thread -> flush
        self._queue: collections.deque[_Queued] = collections.deque()
        self._accepted_seq = 0  # records accepted so far (== sent)
        self._settled_seq = 0  # of those, records that left the queue (to kafka-python, or failed)
        self._buffered_bytes = 0
        self._acked = 0
        self._dropped = 0
        self._failed = 0
        self._closing = False  # no new records; the thread empties the queue
        self._abandon = False  # the thread stops at once; queued records fail
        self._warn_dropped = _RateLimitedLog(logging.WARNING)
        self._log_failed = _RateLimitedLog(logging.ERROR)
        self._thread = threading.Thread(
            target=self._hand_off_forever, name="mlwarden-telemetry-publisher", daemon=True
        )
        self._thread.start()

    # -- the inference path ------------------------------------------------------------------

    def publish(self, record: TelemetryRecord) -> bool:
        """Queue one record for delivery. False means it was dropped (see `stats.dropped`)."""
        key, value = encode_record(record)
        item = _Queued(key, value, time.monotonic())
        with self._lock:
            full = self._buffered_bytes + item.size > self.buffer_bytes
            if self._closing or full:
                self._dropped += 1
            else:
                self._queue.append(item)
                self._buffered_bytes += item.size
                self._accepted_seq += 1
                self._queue_changed.notify()
                return True
        if full:
            self._warn_dropped(
                "telemetry buffer full (%d bytes): dropped records for %s",
                self.buffer_bytes,
                self.topic,
            )
        else:
            self._warn_dropped("telemetry publisher closed: dropped records for %s", self.topic)
        return False

    def publish_inference(
        self,
        *,
        model_id: str,
        model_version: str,
        client_id: str,
        prediction: int | str,
        features: Sequence[float] | Mapping[str, float] | None = None,
        probabilities: Sequence[float] | Mapping[str, float] | None = None,
        input_hash: str | None = None,
        latency_ms: float | None = None,
        attributes: Mapping[str, str | float] | None = None,
        event_id: str | None = None,
        timestamp: float | str | None = None,
    ) -> bool:
        """Build a TelemetryRecord (new uuid4 `event_id`, `timestamp` now) and `publish` it.

        Tuples and other sequences/mappings are copied into lists/dicts; the numbers in them must
        be Python ints or floats (`ndarray.tolist()`). Raises pydantic.ValidationError when the
        fields break the telemetry contract.
        """
        record = TelemetryRecord(
            event_id=event_id if event_id is not None else str(uuid.uuid4()),
            timestamp=timestamp if timestamp is not None else time.time(),
            model_id=model_id,
            model_version=model_version,
            client_id=client_id,
            prediction=prediction,
            features=_plain(features),
            probabilities=_plain(probabilities),
            input_hash=input_hash,
            latency_ms=latency_ms,
            attributes=dict(attributes) if attributes is not None else None,
        )
        return self.publish(record)

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                sent=self._accepted_seq,
                acked=self._acked,
                dropped=self._dropped,
                failed=self._failed,
                buffered_bytes=self._buffered_bytes,
            )

    # -- shutdown ----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything published before this call at once and wait for the outcome.

        True when all of it was acknowledged or failed within `timeout_s`; False on timeout
        (the records stay buffered and keep their chance of delivery).
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._abandon:  # closed: nothing is in flight any more
                return self._accepted_seq == self._acked + self._failed
            target = self._accepted_seq
            while self._settled_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._abandon:
                    return False
                self._handed_off.wait(remaining)
        try:
            self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaTimeoutError:
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is buffered within `timeout_s`, then stop; undelivered records fail."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            already_closing, self._closing = self._closing, True
            self._queue_changed.notify_all()
        if already_closing:
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._abandon = True
            self._handed_off.notify_all()
        self._thread.join()  # at most one metadata wait (_METADATA_WAIT_MS) longer
        # kafka-python 3.0's close() raises from its own flush while records are pending, leaving
        # the producer running, and close(timeout=0) does not wait for its network thread to stop:
        # its sender's force_close fails the pending records (our errback counts them).
        sender = self._producer._sender
        try:
            self._producer.close(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaTimeoutError:
            sender.force_close()
            sender.join(_FORCE_CLOSE_WAIT_S)
            self._producer.close(timeout=0)
        sender.join(_FORCE_CLOSE_WAIT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the background thread ---------------------------------------------------------------

    def _hand_off_forever(self) -> None:
        """Move queued records into kafka-python in order, waiting out missing metadata."""
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._queue_changed.wait()
                if self._abandon or not self._queue:
                    self._fail_queued_locked()
                    return
                item = self._queue[0]
            if self._hand_off(item):
                with self._lock:
                    self._queue.popleft()
                    self._settled_seq += 1
                    self._handed_off.notify_all()
            else:
                self._expire_queued()

    def _hand_off(self, item: _Queued) -> bool:
        """Give one record to kafka-python. False: no topic metadata yet, keep it queued."""
        try:
            future = self._producer.send(self.topic, value=item.value, key=item.key)
        except KafkaTimeoutError:
            return False  # the broker is unreachable and the topic's partitions are unknown
        except KafkaError as exc:  # refused for good (record too large, not authorised, ...)
            self._on_failed(item.size, exc)
            return True
        except Exception as exc:  # a bug: lose this record, keep the thread (and telemetry) alive
            log.exception("telemetry record refused by the Kafka client")
            self._on_failed(item.size, exc)
            return True
        future.add_callback(self._on_acked, item.size)
        future.add_errback(self._on_failed, item.size)
        return True

    def _expire_queued(self) -> None:
        """Fail queued records older than the delivery timeout (the broker stayed away)."""
        expired: list[_Queued] = []
        horizon = time.monotonic() - self._delivery_timeout_s
        with self._lock:
            while self._queue and self._queue[0].queued_at <= horizon:
                expired.append(self._queue.popleft())
                self._settled_seq += 1
            if expired:
                self._handed_off.notify_all()
        for item in expired:
            self._on_failed(item.size, KafkaTimeoutError("no topic metadata: broker unreachable"))

    def _fail_queued_locked(self) -> None:
        """At close: records still queued will never be sent (caller holds the lock)."""
        count = len(self._queue)
        for item in self._queue:
            self._buffered_bytes -= item.size
        self._failed += count
        self._settled_seq += count
        self._queue.clear()
        self._handed_off.notify_all()
        if count:
            log.error("telemetry publisher closed with %d undelivered records", count)

    # -- delivery callbacks (kafka-python's sender thread) -----------------------------------

    def _on_acked(self, size: int, _metadata: object) -> None:
        with self._lock:
            self._acked += 1
            self._buffered_bytes -= size

    def _on_failed(self, size: int, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._buffered_bytes -= size
        # The message, not the exception: a log handler that keeps records would keep its traceback.
        self._log_failed("telemetry record not delivered to %s: %s", self.topic, str(error))


def _plain(
    values: Sequence[float] | Mapping[str, float] | None,
) -> list[float] | dict[str, float] | None:
    """A list or dict copy of a feature/probability vector (the contract's JSON shapes)."""
    if values is None:
        return None
    if isinstance(values, Mapping):
        return dict(values)
    return list(values)
