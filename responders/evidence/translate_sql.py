"""Query tree → an SQLite WHERE clause over the evidence table (see `sqlite_store.py`).

Every value is a bound parameter; field paths come from the field table only. Leaves are
wrapped in `coalesce(…, 0)` because SQL's NULL logic differs from a search engine's:
`NOT client.id:abc` must match documents without a client, as it does in Elasticsearch.
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

Sql = tuple[str, list[Any]]


def to_sql(query: Query) -> Sql:
    """`(where_clause, params)` for `query`."""
    match query:
        case MatchAll():
            return "1", []
        case Exists(field):
            expr, params = column(field)
            return f"({expr} IS NOT NULL)", params
        case Equals(field, value):
            expr, params = column(field)
            return f"coalesce({expr} = ?, 0)", [*params, _value(field, value)]
        case Wildcard(field, pattern):
            expr, params = column(field)
            return f"coalesce({expr} GLOB ?, 0)", [*params, _glob(pattern)]
        case Range(field, low, high, include_low, include_high):
            expr, params = column(field)
            conditions = [f"{expr} IS NOT NULL"]
            values: list[Any] = list(params)
            if low is not None:
                conditions.append(f"{expr} {'>=' if include_low else '>'} ?")
                values += [*params, _value(field, low)]
            if high is not None:
                conditions.append(f"{expr} {'<=' if include_high else '<'} ?")
                values += [*params, _value(field, high)]
            return f"coalesce({' AND '.join(conditions)}, 0)", values
        case Text(text, prefix):
            return (
                "(evidence.rowid IN (SELECT rowid FROM evidence_fts WHERE evidence_fts MATCH ?))",
                [_fts(text, prefix)],
            )
        case And(items):
            return _join(" AND ", items)
        case Or(items):
            return _join(" OR ", items)
        case Not(item):
            clause, params = to_sql(item)
            return f"(NOT {clause})", params
    raise AssertionError(f"unhandled query node {query!r}")


def column(field: Field) -> Sql:
    """The SQL expression of `field` (a column, or a JSON path into the stored document)."""
    if field.name == "@timestamp":
        return "evidence.ts", []
    path = "$" + "".join(f'."{part}"' for part in field.path)
    return "json_extract(evidence.doc, ?)", [path]


def _join(operator: str, items: tuple[Query, ...]) -> Sql:
    clauses: list[str] = []
    params: list[Any] = []
    for item in items:
        clause, item_params = to_sql(item)
        clauses.append(clause)
        params += item_params
    return "(" + operator.join(clauses) + ")", params


def _value(field: Field, value: Value) -> Any:
    if field.type is FieldType.DATE and field.name != "@timestamp" and isinstance(value, float):
        return format_timestamp(value)  # stored as RFC 3339 text of one fixed width: sortable
    return value


def _glob(pattern: Pattern) -> str:
    out: list[str] = []
    for is_wild, text in pattern.parts:
        if is_wild:
            out.append(text)
        else:
            out.append("".join(f"[{c}]" if c in "*?[" else c for c in text))
    return "".join(out)


def _fts(text: str, prefix: bool) -> str:
    phrase = '"' + text.replace('"', '""') + '"'
    return f"message : {phrase}{' *' if prefix else ''}"
