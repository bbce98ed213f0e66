"""Prove an incident's evidence is whole: recompute its hash chain and report every break.

Checks, in chain order: each document's hash matches its content (nothing altered); seqs run
1, 2, 3, … without gaps or repeats (nothing dropped, no fork); each `prev_hash` is its
predecessor's hash (nothing dropped or reordered); and, given the tail the step result
recorded (`last_seq`, `last_hash` on `mlwarden.actions`), that the chain still ends there —
the one removal a chain cannot show by itself is of its last documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mlwarden.responders.evidence.chain import GENESIS_HASH, content_hash
from mlwarden.responders.evidence.documents import ChainLink, EvidenceDocument
from mlwarden.responders.evidence.store import EvidenceStore


class ProblemKind(StrEnum):
    ALTERED = "altered"
    """The content does not hash to the recorded hash."""
    GAP = "gap"
    """Seqs are missing: documents were dropped."""
    DUPLICATE_SEQ = "duplicate_seq"
    """Two different documents claim one position: a fork or an insertion."""
    BROKEN_LINK = "broken_link"
    """`prev_hash` is not the predecessor's hash."""
    TRUNCATED = "truncated"
    """The chain ends before the tail recorded elsewhere."""
    EMPTY = "empty"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    seq: int | None
    document_id: str | None
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq} ({self.document_id})" if self.seq is not None else "chain"
        return f"{self.kind.value}: {where}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    incident_id: str
    documents: int
    last: ChainLink | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_documents(
    incident_id: str,
    documents: list[EvidenceDocument],
    expected_tail: ChainLink | None = None,
) -> VerifyReport:
    """The report for `documents` (any order; repeated ids count once)."""
    unique = {d.id: d for d in documents}
    ordered = sorted(unique.values(), key=lambda d: (d.seq, d.id))
    problems: list[Problem] = []
    if not ordered:
        problems.append(Problem(ProblemKind.EMPTY, None, None, "no evidence for this incident"))
    previous: EvidenceDocument | None = None
    for document in ordered:
        actual = content_hash(document.source)
        if actual != document.hash:
            problems.append(
                Problem(
                    ProblemKind.ALTERED,
                    document.seq,
                    document.id,
                    f"content hashes to {actual[:16]}…, recorded {document.hash[:16]}…",
                )
            )
        expected_seq = 1 if previous is None else previous.seq + 1
        if previous is not None and document.seq == previous.seq:
            problems.append(
                Problem(
                    ProblemKind.DUPLICATE_SEQ,
                    document.seq,
                    document.id,
                    f"seq {document.seq} is also held by {previous.id}",
                )
            )
        elif document.seq != expected_seq:
            missing = (
                f"{expected_seq}"
                if document.seq == expected_seq + 1
                else f"{expected_seq}..{document.seq - 1}"
            )
            problems.append(
                Problem(
                    ProblemKind.GAP,
                    document.seq,
                    document.id,
                    f"seq {missing} missing before it",
                )
            )
        expected_prev = GENESIS_HASH if document.seq == 1 else (previous.hash if previous else "")
        if document.seq == expected_seq and document.prev_hash != expected_prev:
            problems.append(
                Problem(
                    ProblemKind.BROKEN_LINK,
                    document.seq,
                    document.id,
                    f"prev_hash {document.prev_hash[:16]}… is not seq {document.seq - 1}'s "
                    f"hash {expected_prev[:16]}…",
                )
            )
        previous = document
    last = ordered[-1].link if ordered else None
    if expected_tail is not None and (last is None or last.seq < expected_tail.seq):
        problems.append(
            Problem(
                ProblemKind.TRUNCATED,
                expected_tail.seq,
                None,
                f"chain ends at seq {last.seq if last else 0}, but seq {expected_tail.seq} was "
                "recorded as written",
            )
        )
    elif expected_tail is not None:
        at_tail = [d for d in ordered if d.seq == expected_tail.seq]
        if not any(d.hash == expected_tail.hash for d in at_tail):
            problems.append(
                Problem(
                    ProblemKind.ALTERED,
                    expected_tail.seq,
                    at_tail[0].id if at_tail else None,
                    f"the recorded tail hash {expected_tail.hash[:16]}… is not in the chain",
                )
            )
    return VerifyReport(incident_id, len(ordered), last, problems)


async def verify_incident(
    store: EvidenceStore, incident_id: str, expected_tail: ChainLink | None = None
) -> VerifyReport:
    """Read the incident's documents from `store` and verify them."""
    documents = await store.incident_documents(incident_id)
    return verify_documents(incident_id, documents, expected_tail)
