"""Evidence search syntax: Lucene/KQL-style strings, parsed once, run on either store.

    client.id:abc AND rule.name:prada*          field:value, wildcards * and ?
    event.kind:alert AND NOT rule.category:drift AND, OR, NOT, -term, +term, ( )
    mlwarden.alert.score:>=3 mlwarden.chain.seq:[1 TO 10}   ranges on numbers and dates
    @timestamp:[2026-11-23T14:00:00Z TO now-1h]  RFC 3339, dates, epoch seconds, now, now-2h
    "model extraction"  scrap*                   free text over `message` (phrase / word prefix)
    client.id:("a" OR b) _exists_:labels.team   field groups, exists (`field:*` too)

Juxtaposed terms mean AND (`a b` = `a AND b`): evidence searches narrow down, and one rule for
both stores keeps their hits equal. luqum parses the string into a syntax tree; this module
checks it against the field table (`fields.py`) and lowers it to a small query tree that
`translate_es` and `translate_sql` turn into each store's language. Fuzzy (`~`), proximity,
boosts and regular expressions have no SQLite equivalent and are refused. Every refusal is one
error type, `EvidenceQueryError`, with a message that says what to write instead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# luqum ships no type hints; its nodes are checked with isinstance below.
from luqum import tree  # type: ignore[import-untyped]
from luqum.exceptions import ParseError  # type: ignore[import-untyped]
from luqum.parser import parser  # type: ignore[import-untyped]

from mlwarden.responders.evidence.errors import EvidenceQueryError
from mlwarden.responders.evidence.fields import Field, FieldType, resolve_field
from mlwarden.schemas.duration import parse_duration

MESSAGE: Final = Field("message", FieldType.TEXT)


class Wild:
    """Markers inside a wildcard pattern: any run of characters, or exactly one."""

    MANY: Final = "*"
    ONE: Final = "?"


@dataclass(frozen=True)
class Pattern:
    """A wildcard pattern: literal strings and `Wild` markers, in order."""

    parts: tuple[tuple[bool, str], ...]
    """(is_wildcard, text): text is a literal, or `Wild.MANY` / `Wild.ONE`."""


Value = str | float


@dataclass(frozen=True)
class MatchAll:
    pass


@dataclass(frozen=True)
class Exists:
    field: Field


@dataclass(frozen=True)
class Equals:
    field: Field
    value: Value
    """str for keywords, float for numbers, epoch seconds (float) for dates."""


@dataclass(frozen=True)
class Wildcard:
    field: Field
    pattern: Pattern


@dataclass(frozen=True)
class Range:
    field: Field
    low: Value | None
    high: Value | None
    include_low: bool = True
    include_high: bool = True


@dataclass(frozen=True)
class Text:
    """Free text over `message`: a phrase (one or more words, in order) or a word prefix."""

    text: str
    prefix: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Query, ...]


@dataclass(frozen=True)
class Not:
    item: Query


Query = MatchAll | Exists | Equals | Wildcard | Range | Text | And | Or | Not

_MAX_QUERY_CHARS: Final = 4000
_NOW: Final = re.compile(r"now(?:-(?P<ago>.+))?")


def parse_query(text: str, *, now: datetime | None = None) -> Query:
    """Parse and check a search string; `now` anchors `now-2h` (default: the current time).

    Raises `EvidenceQueryError` for anything that cannot run, and only that.
    """
    if len(text) > _MAX_QUERY_CHARS:
        raise EvidenceQueryError(f"query is longer than {_MAX_QUERY_CHARS} characters")
    if any(unicodedata.category(char) == "Cc" and char not in "\t\n\r" for char in text):
        raise EvidenceQueryError("query contains control characters; remove them")
    if not text.strip():
        return MatchAll()
    try:
        syntax = parser.parse(text)
    except ParseError as exc:
        raise EvidenceQueryError(f"cannot parse {text!r}: {exc}") from None
    except RecursionError:
        raise EvidenceQueryError("query nests too deeply; remove some parentheses") from None
    try:
        return _Lowering(now or datetime.now(UTC)).lower(syntax, None)
    except RecursionError:
        raise EvidenceQueryError("query nests too deeply; remove some parentheses") from None


class _Lowering:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def lower(self, node: tree.Item, field: Field | None) -> Query:
        if isinstance(node, tree.SearchField):
            if field is not None:
                raise EvidenceQueryError(
                    f"field {node.name!r} inside the group of field {field.name!r}: "
                    "write one field per group"
                )
            return self._search_field(node)
        if isinstance(node, tree.Group | tree.FieldGroup):
            return self.lower(node.expr, field)
        if isinstance(node, tree.AndOperation | tree.UnknownOperation | tree.BoolOperation):
            return _flatten(And, tuple(self.lower(op, field) for op in node.operands))
        if isinstance(node, tree.OrOperation):
            return _flatten(Or, tuple(self.lower(op, field) for op in node.operands))
        if isinstance(node, tree.Not | tree.Prohibit):
            return Not(self.lower(node.a, field))
        if isinstance(node, tree.Plus):
            return self.lower(node.a, field)
        if isinstance(node, tree.Word | tree.Phrase):
            return self._term(node, field or MESSAGE, free=field is None)
        if isinstance(node, tree.Range):
            return self._range(node.low, node.high, node.include_low, node.include_high, field)
        if isinstance(node, tree.From):
            return self._range(node.a, None, node.include, True, field)
        if isinstance(node, tree.To):
            return self._range(None, node.a, True, node.include, field)
        raise EvidenceQueryError(_unsupported(node))

    def _search_field(self, node: tree.SearchField) -> Query:
        if node.name == "_exists_":
            if not isinstance(node.expr, tree.Word):
                raise EvidenceQueryError("_exists_ takes a field name: _exists_:labels.team")
            return Exists(resolve_field(node.expr.value))
        return self.lower(node.expr, resolve_field(node.name))

    def _term(self, node: tree.Word | tree.Phrase, field: Field, *, free: bool) -> Query:
        if isinstance(node, tree.Phrase):
            literal = _unescape(node.value[1:-1])
            pattern = None
        else:
            pattern = _pattern(node.value)
            literal = "".join(text for _, text in pattern.parts)
            if not any(wild for wild, _ in pattern.parts):
                pattern = None
        if isinstance(node, tree.Word) and node.value == "*":
            return MatchAll() if free else Exists(field)
        if field.type is FieldType.TEXT:
            return _text(literal, pattern)
        if pattern is not None:
            if field.type is not FieldType.KEYWORD:
                raise EvidenceQueryError(
                    f"{field.name} is a {field.type.value} field: wildcards work on keyword "
                    f"fields only; use a range such as {field.name}:[low TO high]"
                )
            return Wildcard(field, pattern)
        return Equals(field, self._value(field, literal))

    def _range(
        self,
        low: tree.Item | None,
        high: tree.Item | None,
        include_low: bool,
        include_high: bool,
        field: Field | None,
    ) -> Query:
        if field is None or field.type is FieldType.TEXT:
            raise EvidenceQueryError(
                "ranges need a keyword, number or date field, e.g. mlwarden.alert.score:>=3"
            )
        return Range(
            field,
            self._bound(low, field),
            self._bound(high, field),
            include_low,
            include_high,
        )

    def _bound(self, node: tree.Item | None, field: Field) -> Value | None:
        if node is None:
            return None
        if isinstance(node, tree.Word):
            if node.value == "*":
                return None
            return self._value(field, _unescape(node.value))
        if isinstance(node, tree.Phrase):
            return self._value(field, _unescape(node.value[1:-1]))
        raise EvidenceQueryError(f"range bound {str(node)!r} must be a value or *")

    def _value(self, field: Field, text: str) -> Value:
        if field.type is FieldType.NUMBER:
            try:
                number = float(text)
            except ValueError:
                raise EvidenceQueryError(
                    f"{field.name} is a number field; {text!r} is not a number"
                ) from None
            if not math.isfinite(number):
                raise EvidenceQueryError(f"{field.name}: {text!r} is not a finite number")
            return number
        if field.type is FieldType.DATE:
            return self._date(field, text)
        return text

    def _date(self, field: Field, text: str) -> float:
        relative = _NOW.fullmatch(text.strip())
        if relative is not None:
            ago = relative.group("ago")
            try:
                delta = parse_duration(ago) if ago else timedelta(0)
            except ValueError as exc:
                raise EvidenceQueryError(f"{field.name}: now-{ago}: {exc}") from None
            return _millis((self.now - delta).timestamp())
        try:
            return _millis(float(text))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise EvidenceQueryError(
                f"{field.name} is a date field; {text!r} is not RFC 3339 "
                "(2026-11-23T14:05:00Z), a date, epoch seconds, now or now-2h"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # documented: dates without offset are UTC
        if not 1 <= moment.year <= 9998:
            raise EvidenceQueryError(f"{field.name}: {text!r} is out of range")
        return _millis(moment.timestamp())


def _millis(seconds: float) -> float:
    if not math.isfinite(seconds) or abs(seconds) > 1e12:
        raise EvidenceQueryError(f"{seconds!r} is not a usable time")
    return round(seconds * 1000) / 1000


def _flatten(kind: type[And] | type[Or], items: tuple[Query, ...]) -> Query:
    flat: list[Query] = []
    for item in items:
        flat.extend(item.items if isinstance(item, kind) else (item,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _text(literal: str, pattern: Pattern | None) -> Text:
    if not any(unicodedata.category(char)[0] in "LN" for char in literal):
        raise EvidenceQueryError(f"free text {literal!r} has no letters or digits to search for")
    if pattern is None:
        return Text(literal)
    wild = [index for index, (is_wild, _) in enumerate(pattern.parts) if is_wild]
    last = len(pattern.parts) - 1
    word = "".join(text for is_wild, text in pattern.parts if not is_wild)
    if wild != [last] or pattern.parts[last][1] != Wild.MANY or not word.isalnum():
        raise EvidenceQueryError(
            f"free text supports one trailing * on a single word (extract*), not {literal!r}; "
            "for wildcards inside values search a keyword field, e.g. rule.name:pra*a"
        )
    return Text(word, prefix=True)


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)


def _pattern(raw: str) -> Pattern:
    parts: list[tuple[bool, str]] = []
    literal: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            literal.append(next(chars, "\\"))
        elif char in (Wild.MANY, Wild.ONE):
            if literal:
                parts.append((False, "".join(literal)))
                literal = []
            parts.append((True, char))
        else:
            literal.append(char)
    if literal:
        parts.append((False, "".join(literal)))
    return Pattern(tuple(parts))


def _unsupported(node: tree.Item) -> str:
    names = {
        tree.Fuzzy: "fuzzy matching (~)",
        tree.Proximity: 'proximity ("a b"~2)',
        tree.Boost: "boosts (^)",
        tree.Regex: "regular expressions (/…/; escape a literal slash: \\/v1\\/score)",
    }
    what = next((label for kind, label in names.items() if isinstance(node, kind)), None)
    if what is None:
        return f"unsupported syntax {str(node)!r}"
    return (
        f"{what} is not supported in evidence search ({str(node).strip()!r}); use wildcards "
        "on keyword fields (rule.name:pra*) or exact phrases"
    )
