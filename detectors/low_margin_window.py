"""A model's low-margin predictions in a sliding event-time window, by client, in fixed memory.

The window is a ring of buckets (`bucket_seconds` wide). Each bucket counts its events and
low-margin events, and per client the low-margin events with Space-Saving (Metwally, Agrawal
& El Abbadi 2005): at most `capacity` counters; a newcomer to a full bucket takes over the
smallest counter c as count c + 1 with error c, so count - error is a guaranteed lower bound
and every client with more than (bucket low-margin events) / capacity is kept. Buckets that
leave the window are folded into an exponentially decayed baseline, unless the caller says
not to learn (an incident is open). Kept apart from the evasion detector so its bookkeeping
can be read, and tested, alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Bucket:
    events: int = 0
    low: int = 0
    clients: dict[str, list[int]] = field(default_factory=dict)  # client -> [low, error, n]


@dataclass(slots=True)
class LowMarginWindow:
    """Window totals, per-client sums over the buckets, and the baseline of what left it."""

    buckets: dict[int, _Bucket] = field(default_factory=dict)
    events: int = 0
    low: int = 0
    clients: dict[str, list[int]] = field(default_factory=dict)  # sums over buckets
    base_events: float = 0.0
    base_low: float = 0.0
    last_fold: int | None = None
    expired_to: int | None = None  # not saved: expiry is idempotent, a restore redoes it

    def add(self, index: int, client: str, low: bool, capacity: int) -> None:
        """Count one event in bucket `index`; queries count only for tracked clients."""
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = _Bucket()
        bucket.events += 1
        self.events += 1
        entry = bucket.clients.get(client)
        if not low:
            if entry is not None:
                entry[2] += 1
                self.clients[client][2] += 1
            return
        bucket.low += 1
        self.low += 1
        if entry is not None:
            entry[0] += 1
            entry[2] += 1
            self._credit(client, 1, 0, 1)
        elif len(bucket.clients) < capacity:
            bucket.clients[client] = [1, 0, 1]
            self._credit(client, 1, 0, 1)
        else:  # Space-Saving: the newcomer inherits the smallest counter as its error
            victim = min(bucket.clients, key=lambda c: (bucket.clients[c][0], c))
            count, error, queries = bucket.clients.pop(victim)
            self._credit(victim, -count, -error, -queries)
            bucket.clients[client] = [count + 1, count, 1]
            self._credit(client, count + 1, count, 1)

    def expire(self, horizon: int, learn: bool, bucket_seconds: float, memory: float) -> None:
        """Drop buckets with index <= `horizon`; fold them into the baseline if `learn`.

        The baseline decays by exp(-elapsed / memory) between folded buckets, so it is a
        rate over roughly the last `memory` seconds of traffic that was not under attack.
        """
        if self.expired_to == horizon:
            return
        self.expired_to = horizon
        for index in sorted(i for i in self.buckets if i <= horizon):
            bucket = self.buckets.pop(index)
            self.events -= bucket.events
            self.low -= bucket.low
            for client, (count, error, queries) in bucket.clients.items():
                self._credit(client, -count, -error, -queries)
            if not learn:
                continue
            if self.last_fold is not None:
                decay = math.exp(-(index - self.last_fold) * bucket_seconds / memory)
                self.base_events *= decay
                self.base_low *= decay
            self.base_events += bucket.events
            self.base_low += bucket.low
            self.last_fold = index

    def excess(self, baseline: float) -> dict[str, float]:
        """Low-margin events beyond the baseline's share, per tracked client (lower bound)."""
        return {c: low - error - baseline * n for c, (low, error, n) in self.clients.items()}

    def since_opening(self) -> dict[str, tuple[int, int]]:
        """Per tracked client, (low-margin events, queries) in the window after the event that
        opened each of its bucket counters: the part of its traffic that is a fair sample of
        its rate.

        A counter opens on a low-margin event, and the client's queries before it in that
        bucket go uncounted, so the opening event is a hit by construction (a client with one
        low-margin query in a minute looks like "1 of 1"). Dropping it leaves the events after
        a stopping time, which are as random as any. Guaranteed counts (count - error) are
        used; when a bucket's counters overflowed, the counters that survived are those with
        more hits, so under overflow this is approximate.
        """
        out: dict[str, tuple[int, int]] = {}
        for bucket in self.buckets.values():
            for client, (count, error, queries) in bucket.clients.items():
                hits, trials = out.get(client, (0, 0))
                out[client] = (hits + count - error - 1, trials + queries - 1)
        return out

    def _credit(self, client: str, low: int, error: int, queries: int) -> None:
        entry = self.clients.setdefault(client, [0, 0, 0])
        entry[0] += low
        entry[1] += error
        entry[2] += queries
        if entry[0] <= 0:
            del self.clients[client]

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": [
                [i, b.events, b.low, [[c, *counts] for c, counts in b.clients.items()]]
                for i, b in sorted(self.buckets.items())
            ],
            "baseline": [self.base_events, self.base_low, self.last_fold],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LowMarginWindow:
        window = cls()
        window.base_events, window.base_low, window.last_fold = raw["baseline"]
        for index, events, low, clients in raw["buckets"]:
            window.buckets[index] = _Bucket(events, low, {c: [n, e, q] for c, n, e, q in clients})
            window.events += events
            window.low += low
            for client, count, error, queries in clients:
                window._credit(client, count, error, queries)
        return window
