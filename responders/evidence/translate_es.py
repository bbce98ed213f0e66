"""Query tree → Elasticsearch query DSL.

Explicit leaf queries (term, wildcard, range, match_phrase, prefix, exists) rather than a
pass-through `query_string`, so Elasticsearch runs exactly what `query.py` checked and the
SQLite store runs the same thing: `query_string` would re-parse the text with its own rules.
"""

from __future__ import annotations

from typing import Any

from mlwarden.responders.evidence.documents import format_timestamp
from mlwarden.responders.evidence.fields import Field, FieldType
from mlwarden.responders.evidence.query import (
    And,
    Equals,
    Exists,
    MatchAll,
    Not,
    Or,
    Pattern,
    Query,
    Range,
    Text,
    Value,
    Wildcard,
)


def to_elasticsearch(query: Query) -> dict[str, Any]:
    """The query DSL object for `query` (the value of the search body's `query` key)."""
    match query:
        case MatchAll():
            return {"match_all": {}}
        case Exists(field):
            return {"exists": {"field": field.name}}
        case Equals(field, value):
            return {"term": {field.name: {"value": _value(field, value)}}}
        case Wildcard(field, pattern):
            return {"wildcard": {field.name: {"value": _wildcard(pattern)}}}
        case Range(field, low, high, include_low, include_high):
            bounds: dict[str, Any] = {}
            if low is not None:
                bounds["gte" if include_low else "gt"] = _value(field, low)
            if high is not None:
                bounds["lte" if include_high else "lt"] = _value(field, high)
            if not bounds:
                return {"exists": {"field": field.name}}
            return {"range": {field.name: bounds}}
        case Text(text, prefix):
            if prefix:
                return {"prefix": {"message": {"value": text.lower()}}}
            return {"match_phrase": {"message": {"query": text}}}
        case And(items):
            return {"bool": {"filter": [to_elasticsearch(item) for item in items]}}
        case Or(items):
            return {
                "bool": {
                    "should": [to_elasticsearch(item) for item in items],
                    "minimum_should_match": 1,
                }
            }
        case Not(item):
            return {"bool": {"must_not": [to_elasticsearch(item)]}}
    raise AssertionError(f"unhandled query node {query!r}")


def _value(field: Field, value: Value) -> Any:
    if field.type is FieldType.DATE and isinstance(value, float):
        return format_timestamp(value)
    return value


def _wildcard(pattern: Pattern) -> str:
    out: list[str] = []
    for is_wild, text in pattern.parts:
        if is_wild:
            out.append(text)
        else:
            out.append(text.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?"))
    return "".join(out)
