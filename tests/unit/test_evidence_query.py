"""Evidence query syntax: parsing, checking, and translation to both stores' languages."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.responders.evidence.errors import EvidenceQueryError
from mlwarden.responders.evidence.fields import FIELDS, FieldType, resolve_field
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
    Wildcard,
    parse_query,
)
from mlwarden.responders.evidence.sqlite_store import _SCHEMA
from mlwarden.responders.evidence.translate_es import to_elasticsearch
from mlwarden.responders.evidence.translate_sql import to_sql

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def parse(text: str) -> Query:
    return parse_query(text, now=NOW)


def test_the_issue_example() -> None:
    query = parse("client.id:abc AND rule.name:prada*")
    assert query == And(
        (
            Equals(FIELDS["client.id"], "abc"),
            Wildcard(FIELDS["rule.name"], Pattern(((False, "prada"), (True, "*")))),
        )
    )
    assert to_elasticsearch(query) == {
        "bool": {
            "filter": [
                {"term": {"client.id": {"value": "abc"}}},
                {"wildcard": {"rule.name": {"value": "prada*"}}},
            ]
        }
    }
    sql, params = to_sql(query)
    assert "GLOB ?" in sql
    assert params == ['$."client"."id"', "abc", '$."rule"."name"', "prada*"]


def test_juxtaposition_means_and_and_operators_nest() -> None:
    # As in Lucene, juxtaposition binds loosest: a (b OR c).
    query = parse('event.kind:alert -rule.category:drift OR "model extraction"')
    assert query == And(
        (
            Equals(FIELDS["event.kind"], "alert"),
            Or((Not(Equals(FIELDS["rule.category"], "drift")), Text("model extraction"))),
        )
    )
    assert parse("a b") == And((Text("a"), Text("b")))
    assert parse("NOT client.id:x") == Not(Equals(FIELDS["client.id"], "x"))


def test_ranges_on_numbers_and_dates() -> None:
    assert parse("mlwarden.alert.score:>=3") == Range(FIELDS["mlwarden.alert.score"], 3.0, None)
    assert parse("mlwarden.chain.seq:[1 TO 10}") == Range(
        FIELDS["mlwarden.chain.seq"], 1.0, 10.0, True, False
    )
    since = parse("@timestamp:[2026-11-23 TO now-1h]")
    assert since == Range(
        FIELDS["@timestamp"], NOW.timestamp() - 86400 + 86400 - 14 * 3600, NOW.timestamp() - 3600
    )
    assert to_elasticsearch(since) == {
        "range": {
            "@timestamp": {"gte": "2026-11-23T00:00:00.000Z", "lte": "2026-11-23T13:00:00.000Z"}
        }
    }


def test_exists_field_groups_phrases_and_escapes() -> None:
    assert parse("_exists_:labels.team") == Exists(resolve_field("labels.team"))
    assert parse("client.id:*") == Exists(FIELDS["client.id"])
    assert parse('client.id:(a OR "b c")') == Or(
        (Equals(FIELDS["client.id"], "a"), Equals(FIELDS["client.id"], "b c"))
    )
    assert parse(r"client.id:a\*b") == Equals(FIELDS["client.id"], "a*b")
    assert parse("*") == MatchAll()
    assert parse("  ") == MatchAll()
    assert parse("extract*") == Text("extract", prefix=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client.idd:abc", "did you mean client.id"),
        ("client.id:abc~2", "fuzzy matching"),
        ('message:"a b"~2', "proximity"),
        ("client.id:abc^2", "boosts"),
        ("/prad.*/", "regular expressions"),
        ("mlwarden.alert.score:high", "not a number"),
        ("mlwarden.alert.score:4*", "wildcards work on keyword fields only"),
        ("@timestamp:>yesterday", "not RFC 3339"),
        ("@timestamp:>now-2 days", "not a duration"),
        ("ex*ct", "one trailing \\*"),
        ("client.id:(a OR rule.name:b)", "one field per group"),
        ("client.id:abc AND", "cannot parse"),
        ("message:[a TO b]", "ranges need"),
        ('"..."', "no letters or digits"),
        ("labels.a.b:x", "names under labels"),
    ],
)
def test_refusals_say_what_to_write_instead(text: str, message: str) -> None:
    with pytest.raises(EvidenceQueryError, match=message):
        parse(text)


def test_wildcard_literals_are_escaped_for_each_store() -> None:
    query = parse(r"client.id:a\*b\[c\]?")
    es = to_elasticsearch(query)
    assert es == {"wildcard": {"client.id": {"value": "a\\*b[c]?"}}}
    _, params = to_sql(query)
    assert params[-1] == "a[*]b[[]c]?"


def database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(_SCHEMA)
    db.execute(
        "INSERT INTO evidence (id, incident_id, seq, ts, doc) VALUES ('x', 'i', 1, 1.0, "
        '\'{"client": {"id": "a*b"}, "message": "hello"}\')'
    )
    db.execute("INSERT INTO evidence_fts (rowid, message) VALUES (1, 'hello world')")
    return db


def run_sql(db: sqlite3.Connection, query: Query) -> list[str]:
    where, params = to_sql(query)
    return [row[0] for row in db.execute(f"SELECT id FROM evidence WHERE {where}", params)]


def test_sql_matches_literal_wildcards_and_keeps_missing_fields_under_not() -> None:
    db = database()
    assert run_sql(db, parse(r"client.id:a\*b")) == ["x"]
    assert run_sql(db, parse(r"client.id:a\*?")) == ["x"]
    assert run_sql(db, parse("client.id:aXb")) == []
    assert run_sql(db, parse("NOT rule.name:prada")) == ["x"]  # rule.name is absent
    assert run_sql(db, parse("hel*")) == ["x"]
    assert run_sql(db, parse('"hello world"')) == ["x"]
    assert run_sql(db, parse('"world hello"')) == []


# --- properties ---------------------------------------------------------------------------

_tokens = st.sampled_from(
    [
        "client.id:",
        "rule.name:",
        "labels.team:",
        "mlwarden.alert.score:",
        "@timestamp:",
        "abc",
        "prada*",
        "3.5",
        "now-2h",
        "2026-11-23",
        '"a b"',
        " AND ",
        " OR ",
        " NOT ",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " TO ",
        "*",
        "?",
        "~",
        "^2",
        "/",
        "\\",
        ":",
        ">=",
        "<",
        "-",
        "+",
        '"',
        " ",
        "_exists_:",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(_tokens, max_size=14).map("".join)))
def test_any_string_parses_or_raises_the_one_error_type(text: str) -> None:
    try:
        query = parse(text)
    except EvidenceQueryError as exc:
        message = str(exc)
        assert message
        return
    to_elasticsearch(query)
    run_sql(database(), query)


_keyword = st.sampled_from([f for f in FIELDS.values() if f.type is FieldType.KEYWORD])
_number = st.sampled_from([f for f in FIELDS.values() if f.type is FieldType.NUMBER])
_any_field = st.sampled_from(list(FIELDS.values()))
_strings = st.text(min_size=0, max_size=12)
_pattern = st.lists(
    st.one_of(
        st.tuples(st.just(True), st.sampled_from(["*", "?"])),
        st.tuples(st.just(False), st.text(min_size=1, max_size=6)),
    ),
    min_size=1,
    max_size=5,
).map(lambda parts: Pattern(tuple(parts)))
_floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)
_leaves: st.SearchStrategy[Query] = st.one_of(
    st.just(MatchAll()),
    st.builds(Exists, _any_field),
    st.builds(Equals, _keyword, _strings),
    st.builds(Equals, _number, _floats),
    st.builds(Equals, st.just(FIELDS["@timestamp"]), _floats),
    st.builds(Wildcard, _keyword, _pattern),
    st.builds(
        Range, _number, st.none() | _floats, st.none() | _floats, st.booleans(), st.booleans()
    ),
    st.builds(Range, _keyword, st.none() | _strings, st.none() | _strings),
    st.builds(
        Text,
        st.text(alphabet="abcdé1 \"'-*", min_size=1, max_size=12).filter(
            lambda t: any(c.isalnum() for c in t)
        ),
    ),
    st.builds(Text, st.text(alphabet="abc1", min_size=1, max_size=6), st.just(True)),
)
_queries = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
        st.builds(Not, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_queries)
def test_translating_any_query_tree_gives_runnable_sql_and_json_dsl(query: Query) -> None:
    json.dumps(to_elasticsearch(query))
    run_sql(database(), query)
