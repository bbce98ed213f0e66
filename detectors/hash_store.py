"""One model's Blacklight memory: recent fingerprints, the queries they came from, clusters.

Blacklight (Li et al., USENIX Security 2022) keeps every hash of every query in one table,
hash → query ids, and calls a new query a match when some earlier query shares ≥ T of its
hashes. Here the table is bounded by the queries it indexes: a query older than
`ttl_seconds` of watermark is dead (ignored at once, dropped with its hashes at the end of
the batch), at most `max_queries` are kept (oldest out first, at insert), and each hash
points at its `refs_per_hash` latest queries. All of it is decided per event in arrival
order, so batching never changes a result. To keep the garbage collector out of the hot
path, the index holds plain ints (one query) or short lists, and a query is a tuple with its
hashes packed as bytes.

Clusters (our addition, for sybils): a query that matches an earlier one joins that query's
cluster — near-duplicates chain into one cluster, as a boundary walk does. A cluster
remembers which clients sent its last `cluster_members` queries within `window_seconds`;
a client with at least `min_queries` of them is a participant. A campaign split across many
account ids shows up as one cluster with many participants, whereas a popular input that
many ordinary clients each send once has many clients but no participants.
"""

from __future__ import annotations

import base64
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlwarden.detectors.client_state import pack_array, unpack_array

_Query = tuple[str, int, float, bytes]  # client, cluster root, event time, packed hashes


@dataclass(frozen=True, slots=True)
class StoreLimits:
    ttl_seconds: float
    refs_per_hash: int
    max_queries: int
    window_seconds: float
    cluster_members: int
    min_queries: int


@dataclass(frozen=True, slots=True)
class Match:
    """The earlier query sharing most hashes with a new one, and the client's own best."""

    seq: int
    shared: int
    identity: int  # the smallest hash the two share
    own_shared: int


@dataclass(slots=True)
class Cluster:
    identity: int
    last_ts: float
    members: deque[tuple[float, str]] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)
    participants: int = 0
    alerted: bool = False
    recent_ids: deque[str] = field(default_factory=lambda: deque(maxlen=5))

    def participant_ids(self, min_queries: int) -> list[str]:
        """Sorted, so the list does not depend on the history a restored state lacks."""
        return sorted(client for client, n in self.counts.items() if n >= min_queries)


@dataclass(slots=True)
class _Ring:
    clients: set[str]
    last_ts: float


_RING_CLIENTS = 1000


class ModelStore:
    """hash → recent queries, query → (client, cluster, time, hashes), root → Cluster."""

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits
        self._index: dict[int, int | list[int]] = {}
        self._queries: OrderedDict[int, _Query] = OrderedDict()  # by sequence number
        self._clusters: OrderedDict[int, Cluster] = OrderedDict()  # least recently used first
        self._rings: list[_Ring] = []  # sybil rings reported and still active
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._queries)

    @property
    def empty(self) -> bool:
        """Nothing left that a future event could see."""
        return not (self._queries or self._clusters or self._rings)

    def match(self, hashes: list[int], client: str, watermark: float) -> Match | None:
        """Best earlier match of `hashes` (most shared, then most recent), live queries only."""
        cutoff = watermark - self.limits.ttl_seconds
        shared: dict[int, int] = {}
        index = self._index
        for value in hashes:
            entry = index.get(value)
            if entry is None:
                continue
            if isinstance(entry, int):
                shared[entry] = shared.get(entry, 0) + 1
            else:
                for ref in entry:
                    shared[ref] = shared.get(ref, 0) + 1
        best, best_n, own_n = -1, 0, 0
        for ref, n in shared.items():
            query = self._queries.get(ref)
            if query is None or query[2] < cutoff:
                continue
            if n > best_n or (n == best_n and ref > best):
                best, best_n = ref, n
            if query[0] == client:
                own_n = max(own_n, n)
        if best < 0:
            return None
        identity = min(set(hashes).intersection(array("Q", self._queries[best][3])))
        return Match(seq=best, shared=best_n, identity=identity, own_shared=own_n)

    def add(self, hashes: list[int], client: str, ts: float, joined: int | None) -> int:
        """Remember a query (in cluster `joined`, or its own); returns its sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        packed = array("Q", hashes).tobytes()
        self._queries[seq] = (client, seq if joined is None else joined, ts, packed)
        self._index_query(seq, hashes)
        if len(self._queries) > self.limits.max_queries:
            self._forget(*self._queries.popitem(last=False))
        return seq

    def _index_query(self, seq: int, hashes: list[int] | array[int]) -> None:
        index, cap = self._index, self.limits.refs_per_hash
        for value in hashes:
            entry = index.get(value)
            if entry is None or cap == 1:
                index[value] = seq
            elif isinstance(entry, int):
                index[value] = [entry, seq]
            else:
                entry.append(seq)
                if len(entry) > cap:
                    del entry[0]

    def _forget(self, seq: int, query: _Query) -> None:
        """Unindex the oldest query: where still listed, it is first (seqs only grow)."""
        index = self._index
        for value in array("Q", query[3]):
            entry = index.get(value)
            if entry == seq:
                del index[value]
            elif isinstance(entry, list) and entry[0] == seq:
                del entry[0]
                if len(entry) == 1:
                    index[value] = entry[0]

    def cluster_of(self, match: Match, watermark: float) -> tuple[int, Cluster]:
        """The live cluster of the matched query, started from the matched pair if none."""
        earlier_client, root, earlier_ts, _ = self._queries[match.seq]
        cluster = self._clusters.get(root)
        if cluster is None or watermark - cluster.last_ts > self.limits.window_seconds:
            cluster = Cluster(identity=match.identity, last_ts=earlier_ts)
            self._clusters[root] = cluster
            self._join(cluster, earlier_ts, earlier_client, watermark)
        self._clusters.move_to_end(root)
        return root, cluster

    def join(self, cluster: Cluster, ts: float, client: str, event_id: str, wm: float) -> None:
        self._join(cluster, ts, client, wm)
        cluster.recent_ids.append(event_id)

    def _join(self, cluster: Cluster, ts: float, client: str, watermark: float) -> None:
        limits = self.limits
        members = cluster.members
        while members and (
            members[0][0] < watermark - limits.window_seconds
            or len(members) >= limits.cluster_members
        ):
            self._count(cluster, members.popleft()[1], -1)
        members.append((ts, client))
        self._count(cluster, client, +1)
        cluster.last_ts = max(cluster.last_ts, ts)

    def _count(self, cluster: Cluster, client: str, change: int) -> None:
        before = cluster.counts.get(client, 0)
        after = before + change
        if after:
            cluster.counts[client] = after
        else:
            del cluster.counts[client]
        threshold = self.limits.min_queries
        cluster.participants += (after >= threshold) - (before >= threshold)

    def known_ring(self, clients: list[str], ts: float, watermark: float) -> bool:
        """True if any of `clients` belongs to a live reported ring (which then grows).

        A campaign's walk leaves a trail of clusters (each probe burst is one), and a ring
        that rotates its ids shows a different subset in each; the accounts, linked through
        shared members, identify the campaign, so a later cluster of the same ring extends
        the incident instead of raising another alert. Unknown rings are registered.
        """
        fresh = set(clients)
        for ring in self._rings:
            live = watermark - ring.last_ts <= self.limits.window_seconds
            if live and not ring.clients.isdisjoint(fresh):
                if len(ring.clients) < _RING_CLIENTS:
                    ring.clients |= fresh
                ring.last_ts = max(ring.last_ts, ts)
                return True
        self._rings.append(_Ring(fresh, ts))
        return False

    def refresh_rings(self, client: str, ts: float, watermark: float) -> None:
        """A reported ring's member is still at it: keep the ring's incident open."""
        for ring in self._rings:
            if client in ring.clients and watermark - ring.last_ts <= self.limits.window_seconds:
                ring.last_ts = max(ring.last_ts, ts)

    def expire(self, watermark: float) -> None:
        """Drop what no future event can see (dead by watermark): memory only, no semantics."""
        ttl_cut = watermark - self.limits.ttl_seconds
        while self._queries:
            seq, query = next(iter(self._queries.items()))
            if query[2] >= ttl_cut:
                break
            del self._queries[seq]
            self._forget(seq, query)
        window_cut = watermark - self.limits.window_seconds
        while self._clusters:
            root, cluster = next(iter(self._clusters.items()))
            if cluster.last_ts >= window_cut:
                break
            del self._clusters[root]
        self._rings = [ring for ring in self._rings if ring.last_ts >= window_cut]

    def state_dict(self) -> dict[str, Any]:
        queries = list(self._queries.items())
        names = sorted({query[0] for _, query in queries})
        number = {name: i for i, name in enumerate(names)}
        return {
            "next_seq": self._next_seq,
            "seq": pack_array(np.array([seq for seq, _ in queries], dtype=np.int64)),
            "client": pack_array(np.array([number[q[0]] for _, q in queries], dtype=np.int32)),
            "cluster": pack_array(np.array([q[1] for _, q in queries], dtype=np.int64)),
            "ts": pack_array(np.array([q[2] for _, q in queries], dtype=np.float64)),
            "sizes": pack_array(np.array([len(q[3]) // 8 for _, q in queries], dtype=np.int32)),
            "hashes": base64.b64encode(b"".join(q[3] for _, q in queries)).decode("ascii"),
            "clients": names,
            "rings": [[sorted(ring.clients), ring.last_ts] for ring in self._rings],
            "clusters": [
                [
                    root,
                    c.identity,
                    c.last_ts,
                    [list(m) for m in c.members],
                    c.alerted,
                    list(c.recent_ids),
                ]
                for root, c in self._clusters.items()
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], limits: StoreLimits) -> ModelStore:
        """Queries come back in order and are re-indexed, which rebuilds the same index."""
        store = cls(limits)
        store._next_seq = int(state["next_seq"])
        names = state["clients"]
        packed = base64.b64decode(state["hashes"])
        offset = 0
        for seq, client, root, ts, size in zip(
            unpack_array(state["seq"], np.int64).tolist(),
            unpack_array(state["client"], np.int32).tolist(),
            unpack_array(state["cluster"], np.int64).tolist(),
            unpack_array(state["ts"], np.float64).tolist(),
            unpack_array(state["sizes"], np.int32).tolist(),
            strict=True,
        ):
            hashes = packed[offset : offset + 8 * size]
            offset += 8 * size
            store._queries[seq] = (names[client], root, ts, hashes)
            store._index_query(seq, array("Q", hashes))
        store._rings = [_Ring(set(clients), last_ts) for clients, last_ts in state["rings"]]
        for root, identity, last_ts, members, alerted, recent in state["clusters"]:
            cluster = Cluster(identity=identity, last_ts=last_ts, alerted=alerted)
            cluster.recent_ids.extend(recent)
            for ts, client in members:
                cluster.members.append((ts, client))
                store._count(cluster, client, +1)
            store._clusters[root] = cluster
        return store
