"""The searchable fields of evidence documents, with their type: one table both stores use.

The Elasticsearch mappings (`deploy/elasticsearch/`) and the SQLite translation must agree on
what each field is, or one query would mean two things; a unit test checks the component
template against this table. Fields not listed here are stored (the raw features and
probabilities, the detector's evidence numbers) but not searchable, as in the ES mapping.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mlwarden.responders.evidence.errors import EvidenceQueryError


class FieldType(StrEnum):
    KEYWORD = "keyword"
    """Exact, case-sensitive strings; wildcards allowed."""
    TEXT = "text"
    """Analysed text (`message`): words and phrases, prefix wildcards."""
    NUMBER = "number"
    DATE = "date"


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType

    @property
    def path(self) -> tuple[str, ...]:
        """The JSON path inside a document (`client.id` → ("client", "id"))."""
        if self.name.startswith("@"):
            return (self.name,)
        return tuple(self.name.split("."))


_KEYWORDS: Final = (
    "event.kind",
    "event.id",
    "event.dataset",
    "rule.name",
    "rule.id",
    "rule.category",
    "rule.ruleset",
    "client.id",
    "observer.version",
    "mlwarden.incident.id",
    "mlwarden.playbook",
    "mlwarden.model.id",
    "mlwarden.model.version",
    "mlwarden.alert.id",
    "mlwarden.alert.fingerprint",
    "mlwarden.alert.severity",
    "mlwarden.query.prediction",
    "mlwarden.query.input_hash",
    "mlwarden.snapshot.key",
    "mlwarden.chain.hash",
    "mlwarden.chain.prev_hash",
)
_NUMBERS: Final = (
    "mlwarden.alert.score",
    "mlwarden.alert.threshold",
    "mlwarden.query.latency_ms",
    "mlwarden.chain.seq",
    "mlwarden.snapshot.index",
    "mlwarden.snapshot.size",
)

FIELDS: Final[dict[str, Field]] = {
    "@timestamp": Field("@timestamp", FieldType.DATE),
    "event.created": Field("event.created", FieldType.DATE),
    "message": Field("message", FieldType.TEXT),
    **{name: Field(name, FieldType.KEYWORD) for name in _KEYWORDS},
    **{name: Field(name, FieldType.NUMBER) for name in _NUMBERS},
}

# Open-ended keyword objects: `labels.team`, `mlwarden.query.attributes.route`.
KEYWORD_OBJECTS: Final = ("labels", "mlwarden.query.attributes")
_SUBFIELD: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


def resolve_field(name: str) -> Field:
    """The field called `name`, or an error that lists the close names."""
    known = FIELDS.get(name)
    if known is not None:
        return known
    for prefix in KEYWORD_OBJECTS:
        if name.startswith(prefix + "."):
            rest = name[len(prefix) + 1 :]
            if _SUBFIELD.fullmatch(rest):
                return Field(name, FieldType.KEYWORD)
            raise EvidenceQueryError(
                f"field {name!r}: names under {prefix}. are letters, digits, '_' and '-'"
            )
    close = difflib.get_close_matches(name, [*FIELDS, *(p + ".*" for p in KEYWORD_OBJECTS)], n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise EvidenceQueryError(
        f"unknown field {name!r}{hint} (searchable fields: {', '.join(sorted(FIELDS))}, "
        f"{', '.join(p + '.<name>' for p in KEYWORD_OBJECTS)})"
    )
