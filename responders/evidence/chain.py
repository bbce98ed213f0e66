"""The hash chain that makes evidence tamper-evident.

Every document of an incident carries `mlwarden.chain.seq` (1, 2, 3, … per incident),
`mlwarden.chain.prev_hash` (the hash of the document before it; 64 zeros for the first) and
`mlwarden.chain.hash`: SHA-256 of the document's canonical JSON *without* its own hash field
(so seq and prev_hash are covered too). Changing any field of any document breaks its hash;
removing one leaves a seq gap and a broken prev link in its successor (`verify.py`). A
removed *tail* shows only against an anchor kept elsewhere: the step result records the last
seq and hash on `mlwarden.actions`, and `verify_incident(..., expected_tail=...)` checks it.

Canonical JSON must survive a round trip through a store that re-serialises documents (a
search engine may print `1.0` as `1`), so numbers are normalised the way RFC 8785 (JCS) does:
an integral float is written as an integer. Keys are sorted, no whitespace, UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Final

GENESIS_HASH: Final = "0" * 64
"""`prev_hash` of an incident's first document."""

_MAX_EXACT_INT: Final = 2**53


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _normalise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("evidence documents hold finite numbers only (see json_safe)")
        if value.is_integer() and abs(value) < _MAX_EXACT_INT:
            return int(value)
        return value
    return value


def canonical_json(value: Any) -> str:
    """The one byte form a document is hashed in (sorted keys, integral floats as ints)."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_safe(value: Any) -> Any:
    """`value` with NaN and ±infinity replaced by strings, which JSON stores cannot hold.

    Detector evidence may contain them (an undefined statistic); the text keeps the meaning.
    """
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def content_hash(source: dict[str, Any]) -> str:
    """SHA-256 (hex) of `source` without `mlwarden.chain.hash`: what the chain records."""
    mlwarden = dict(source.get("mlwarden", {}))
    chain = dict(mlwarden.get("chain", {}))
    chain.pop("hash", None)
    mlwarden["chain"] = chain
    content = {**source, "mlwarden": mlwarden}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()
