"""The latest raw telemetry of every client and every model, kept so alerts can carry it.

An evidence snapshot is only as good as the queries it holds: "client X scraped the model" means
little in a postmortem without X's actual queries. The detectors do not keep raw records (their
state is statistics), so the worker keeps a small ring buffer beside them and attaches the alert
subject's latest records to the alert (`Alert.recent_telemetry`) when it emits it.

Memory is bounded three ways, because telemetry keys are chosen by the outside world (a scraper
can rotate through a million client ids):

* per key: the last `per_key` records (a deque with `maxlen`);
* in keys: at most `max_keys` keys, least recently *updated* evicted first (LRU);
* in bytes: records are held as compact JSON `bytes` and their sizes summed; past `max_bytes`
  whole least-recently-updated keys are evicted until the total fits.

A record is encoded once and the same `bytes` object is shared by its client's and its model's
buffer. `benchmarks/recent_telemetry.py` measures the bytes each key really costs.

Thread-safe: the worker observes from its detection thread and reads from the event loop.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlwarden.schemas.alert import Alert
from mlwarden.schemas.telemetry import TelemetryRecord

_ClientKey = tuple[str, str]  # ("c", client_id)
_ModelKey = tuple[str, str, str]  # ("m", model_id, model_version)
_Key = _ClientKey | _ModelKey

# What a deque slot, the key tuple and the OrderedDict entry cost beyond the payloads (CPython
# 3.11, 64-bit), measured by the benchmark; counted so that a flood of tiny keys stays bounded too.
_KEY_OVERHEAD_BYTES: Final = 900
_SLOT_OVERHEAD_BYTES: Final = 8


@dataclass
class _Buffer:
    records: deque[bytes]
    size: int = 0
    """Sum of `sys.getsizeof` of the records held plus the key overhead."""


class RecentTelemetry:
    """Per client id and per (model_id, model_version): the last records seen, newest last.

    `observe(records)` from the worker's batch loop, before the batch's alerts are emitted;
    `for_alert(alert, max_records)` when emitting an alert.

    >>> recent = RecentTelemetry(per_key=2)
    >>> from mlwarden.schemas.telemetry import TelemetryRecord
    >>> recent.observe(
    ...     TelemetryRecord(event_id=f"e{i}", timestamp=1.8e9 + i, model_id="m",
    ...                     model_version="1", client_id="c", prediction=i)
    ...     for i in range(3)
    ... )
    >>> [r["event_id"] for r in recent.for_client("c")]
    ['e1', 'e2']
    """

    def __init__(
        self,
        per_key: int = 200,
        max_keys: int = 50_000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if per_key < 1 or max_keys < 1 or max_bytes < 1:
            raise ValueError("per_key, max_keys and max_bytes must all be at least 1")
        self.per_key = per_key
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._buffers: OrderedDict[_Key, _Buffer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted_keys = 0
        """Keys dropped to stay within `max_keys` / `max_bytes` (a gauge for dashboards)."""

    @property
    def bytes_held(self) -> int:
        """The accounted size of everything held (payloads plus per-key and per-slot overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._buffers)

    def observe(self, records: Iterable[TelemetryRecord]) -> None:
        """Remember `records` (in the order given) under their client and their model."""
        with self._lock:
            for record in records:
                payload = record.model_dump_json(exclude_none=True).encode()
                self._append(("c", record.client_id), payload)
                self._append(("m", record.model_id, record.model_version), payload)
            self._evict()

    def for_alert(self, alert: Alert, max_records: int | None = None) -> list[dict[str, Any]]:
        """The alert subject's latest records, newest last: its client's, or (model-level
        alerts, `client_id` None) its model version's."""
        if alert.client_id is not None:
            return self.for_client(alert.client_id, max_records)
        return self.for_model(alert.model_id, alert.model_version, max_records)

    def for_client(self, client_id: str, max_records: int | None = None) -> list[dict[str, Any]]:
        return self._read(("c", client_id), max_records)

    def for_model(
        self, model_id: str, model_version: str, max_records: int | None = None
    ) -> list[dict[str, Any]]:
        return self._read(("m", model_id, model_version), max_records)

    def _read(self, key: _Key, max_records: int | None) -> list[dict[str, Any]]:
        limit = self.per_key if max_records is None else max(0, max_records)
        with self._lock:
            buffer = self._buffers.get(key)
            payloads = list(buffer.records) if buffer is not None else []
        if limit == 0:
            return []
        # A producer retry can deliver an event twice; keep its latest copy only.
        newest_first: list[dict[str, Any]] = []
        seen: set[str] = set()
        for payload in reversed(payloads):
            record: dict[str, Any] = json.loads(payload)
            if record["event_id"] in seen:
                continue
            seen.add(record["event_id"])
            newest_first.append(record)
            if len(newest_first) == limit:
                break
        newest_first.reverse()
        return newest_first

    def _append(self, key: _Key, payload: bytes) -> None:
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = _Buffer(deque(maxlen=self.per_key), _KEY_OVERHEAD_BYTES)
            self._buffers[key] = buffer
            self._bytes += _KEY_OVERHEAD_BYTES
        else:
            self._buffers.move_to_end(key)
        added = sys.getsizeof(payload) + _SLOT_OVERHEAD_BYTES
        if len(buffer.records) == buffer.records.maxlen:
            dropped = sys.getsizeof(buffer.records[0]) + _SLOT_OVERHEAD_BYTES
            buffer.size -= dropped
            self._bytes -= dropped
        buffer.records.append(payload)
        buffer.size += added
        self._bytes += added

    def _evict(self) -> None:
        while self._buffers and (
            len(self._buffers) > self.max_keys or self._bytes > self.max_bytes
        ):
            _, buffer = self._buffers.popitem(last=False)
            self._bytes -= buffer.size
            self.evicted_keys += 1


def attach_recent(
    recent: RecentTelemetry, records: Sequence[TelemetryRecord], alerts: Sequence[Alert]
) -> list[Alert]:
    """Observe a detected batch and give each of its alerts the subject's telemetry *as of*
    the alert: the records up to its `detected_at`, not the rest of the batch, so that a
    busy client's later queries do not push the ones that tripped the alert out of the buffer.

    `records` are in partition order, which is event-time order for one producer; alerts keep
    their order.
    """
    stamps = sorted({alert.detected_at.timestamp() for alert in alerts})
    attached: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for stamp in stamps:
        cut = start
        while cut < len(records) and records[cut].timestamp <= stamp:
            cut += 1
        recent.observe(records[start:cut])
        start = cut
        for alert in alerts:
            if alert.detected_at.timestamp() == stamp:
                attached[alert.alert_id] = recent.for_alert(alert)
    recent.observe(records[start:])
    return [
        alert.model_copy(update={"recent_telemetry": attached[alert.alert_id]}) for alert in alerts
    ]
