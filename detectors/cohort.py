"""One Wald test over the pooled queries of low-volume accounts: sybil rings split a campaign
so thinly that no account sends enough queries for a test of its own.

A per-client SPRT needs a few dozen of a client's queries before it can tell "odd" from
"unlucky". A sybil campaign (many accounts, Douceur 2002) deals its queries out so that each
account stays below that: 30 accounts sending 3 queries/s between them get to 10 queries each
only after 300 queries in all. Their queries are, however, one population: pooling every
query of every *low-volume* account (fewer than `max_queries` so far) into a single SPRT sees
the campaign as soon as the pooled rate of hits rises, whoever sent them. Established clients
are left to their own tests and do not dilute the pool; a benign low-volume account sends
hits at the population rate, as any other.

The test is the per-client one (H0: rate <= null x p0, H1: rate >= alt x p0, Wald's
boundaries from alpha and beta), run over the pool. A rejection names a ring only if at least
`min_clients` accounts sent hits in the test and none of them owns more than `max_share` of
the hits: one account with a high rate is a per-client finding, not a ring. The ring's
members are the accounts whose own hit rate in the test reached the alternative rate — a
benign account that happened to send one hit among many queries is not listed, but a benign
low-volume account whose one query in the test was a hit is indistinguishable from a sybil
and is (an account's own evidence is one or two queries: the ring is only seen pooled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlwarden.detectors.online import WaldTest


@dataclass(slots=True)
class CohortTest(WaldTest):
    """The pooled test of one model version's low-volume accounts, with each one's share."""

    members: dict[str, list[int]] = field(default_factory=dict)  # client -> [queries, hits]

    def observe_client(self, client_id: str, hit: bool, h0: float, h1: float) -> None:
        self.observe(hit, h0, h1)
        counts = self.members.setdefault(client_id, [0, 0])
        counts[0] += 1
        counts[1] += hit

    def restart(self, now: float) -> None:
        super(CohortTest, self).restart(now)
        self.members.clear()

    def ring(self, alt_rate: float, min_clients: int, max_share: float) -> list[str] | None:
        """The ring's accounts, most hits first, if the hits are spread like one; else None."""
        hitters = {c: counts for c, counts in self.members.items() if counts[1] > 0}
        if len(hitters) < min_clients or self.hits == 0:
            return None
        if max(counts[1] for counts in hitters.values()) > max_share * self.hits:
            return None
        ring = [c for c, (queries, hits) in hitters.items() if hits >= alt_rate * queries]
        if len(ring) < min_clients:
            return None
        return sorted(ring, key=lambda c: (-hitters[c][1], c))

    def to_json(self) -> list[Any]:
        members = [[c, q, h] for c, (q, h) in self.members.items()]
        return [self.llr, self.queries, self.hits, self.test_start, members, self.incident]

    @classmethod
    def from_json(cls, raw: list[Any]) -> CohortTest:
        llr, queries, hits, start, members, incident = raw
        return cls(
            llr=float(llr),
            queries=int(queries),
            hits=int(hits),
            test_start=float(start),
            members={c: [int(q), int(h)] for c, q, h in members},
            incident=incident,
        )
