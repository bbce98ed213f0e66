"""What the worker's ring buffer of recent telemetry costs: bytes per key, and observe speed.

Measures `RecentTelemetry` with tracemalloc (real allocations, not the buffer's own estimate)
for realistic records (16 features, 10 class probabilities, two attributes), for keys holding
one record (the flood of fresh client ids a scraper rotating keys produces) and full keys, and
shows that a million distinct clients stay within `max_bytes`. Prints figures; run it with
`python benchmarks/recent_telemetry.py`.
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc

from mlwarden.schemas.telemetry import TelemetryRecord
from mlwarden.streams.recent import RecentTelemetry


def record(i: int, client: str) -> TelemetryRecord:
    return TelemetryRecord(
        event_id=f"evt-{i:012d}",
        timestamp=1_800_000_000.0 + i * 0.01,
        model_id="fraud-scorer",
        model_version="3",
        client_id=client,
        features=[((i * 31 + k) % 97) / 9.7 for k in range(16)],
        probabilities=[0.91] + [0.01] * 9,
        prediction=i % 10,
        latency_ms=4.2,
        attributes={"route": "/v1/score", "source_ip": "10.1.2.3"},
    )


def measured_bytes(recent: RecentTelemetry, records: list[TelemetryRecord]) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(records), 2000):
        recent.observe(records[start : start + 2000])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def main() -> None:
    one = record(0, "c")
    payload = len(one.model_dump_json(exclude_none=True))
    print(f"record as compact JSON: {payload} bytes")

    clients = 20_000
    singles = [record(i, f"client-{i}") for i in range(clients)]
    recent = RecentTelemetry(per_key=200, max_keys=10**7, max_bytes=10**12)
    used = measured_bytes(recent, singles)
    print(
        f"{clients} clients x 1 record: {used / clients:,.0f} bytes per client key "
        f"(estimate the buffer accounts: {recent.bytes_held / clients:,.0f})"
    )

    per_key, full_clients = 200, 200
    fulls = [record(i, f"client-{i % full_clients}") for i in range(per_key * full_clients)]
    recent = RecentTelemetry(per_key=per_key, max_keys=10**7, max_bytes=10**12)
    used = measured_bytes(recent, fulls)
    print(
        f"{full_clients} clients x {per_key} records: {used / full_clients:,.0f} bytes per "
        f"full client key (estimate: {recent.bytes_held / full_clients:,.0f}; the model key's "
        "copies share the client keys' bytes)"
    )

    budget = 64 * 1024 * 1024
    recent = RecentTelemetry(per_key=200, max_keys=1_000_000, max_bytes=budget)
    flood = 1_000_000
    template = record(0, "x")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch: list[TelemetryRecord] = []
    for i in range(flood):
        # model_copy skips validation: the flood measures the buffer, not pydantic.
        batch.append(template.model_copy(update={"client_id": f"rotating-{i}"}))
        if len(batch) == 2000:
            recent.observe(batch)
            batch.clear()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"{flood:,} distinct clients through a {budget >> 20} MiB budget: {len(recent):,} keys "
        f"kept, {recent.evicted_keys:,} evicted, {recent.bytes_held / 2**20:.1f} MiB accounted, "
        f"peak RSS grew {(rss_after - rss_before) / 1024:.0f} MiB"
    )
    records = [record(i, f"client-{i % 500}") for i in range(100_000)]
    recent = RecentTelemetry()
    started = time.perf_counter()
    for start in range(0, len(records), 2000):
        recent.observe(records[start : start + 2000])
    elapsed = time.perf_counter() - started
    print(f"observe: {elapsed / len(records) * 1e6:.2f} µs per record ({len(records):,} records)")


if __name__ == "__main__":
    main()
