"""Safe YAML: plain values plus the position of every node, for errors that point at the line.

Playbooks are read with PyYAML's `SafeLoader`, but only as far as `compose` (the node graph,
where every node keeps its start mark); the values are built here, so the loader decides what
YAML may do. Refused, each with its position:

- documents over `MAX_BYTES` (256 KiB) and nesting deeper than `MAX_DEPTH`;
- anchors and aliases (`&a`, `*a`): the billion-laughs expansion needs them, a playbook does not;
- tags other than the core ones (str, int, float, bool, null, seq, map): no `!!python/...`,
  `!!binary`, custom `!tags`, and no implicit timestamps or `<<` merge keys (those stay strings);
- duplicate mapping keys (YAML forbids them; PyYAML would silently keep the last) and keys that
  are not strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES: Final = 256 * 1024
MAX_DEPTH: Final = 64

_CORE = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP = _CORE + "str", _CORE + "seq", _CORE + "map"
_SCALAR_TAGS: Final = frozenset({_STR} | {_CORE + t for t in ("int", "float", "bool", "null")})

NodePath = tuple[str | int, ...]

_WRITE_IT_OUT: Final = "are not allowed in playbooks; write the value out in full"


@dataclass(frozen=True)
class Position:
    """1-based line and column, as editors count."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: Any) -> Position:
        """From a PyYAML mark (0-based); typed Any as the stubs offer two Mark classes or None."""
        return cls(mark.line + 1, mark.column + 1) if mark is not None else cls(1, 1)


class YamlRefusal(Exception):  # noqa: N818 - internal; the loader turns it into a PlaybookError
    """The text is not YAML a playbook may use; `position` says where."""

    def __init__(self, position: Position, problem: str) -> None:
        super().__init__(problem)
        self.position = position
        self.problem = problem


@dataclass
class Document:
    """A YAML document as plain values, with where each value (and each mapping key) starts."""

    value: Any
    values: dict[NodePath, Position] = field(default_factory=dict)
    keys: dict[NodePath, Position] = field(default_factory=dict)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and deep nesting while composing."""

    # Only the resolvers for core scalars: no timestamp, merge (<<) or value (=) tags.
    # (A class attribute, as in PyYAML itself; the stubs declare it an instance variable.)
    yaml_implicit_resolvers = {  # noqa: RUF012
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _SCALAR_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # stub lacks types
        where = Position.of(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefusal(where, f"YAML aliases (*name) {_WRITE_IT_OUT}")
        if getattr(event, "anchor", None) is not None:
            raise YamlRefusal(where, f"YAML anchors (&name) {_WRITE_IT_OUT}")
        if self._depth >= MAX_DEPTH:
            raise YamlRefusal(where, f"nested deeper than {MAX_DEPTH}")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _position_of_index(text: str, index: int) -> Position:
    before = text[:index]
    return Position(before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def parse(text: str) -> Document:
    """Parse one YAML document; raise YamlRefusal (with a position) for anything refused."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise YamlRefusal(Position(1, 1), f"document is {size} bytes; the limit is {MAX_BYTES}")
    try:
        loader = _StrictLoader(text)  # the reader refuses unprintable characters right here
    except yaml.reader.ReaderError as exc:
        where = _position_of_index(text, int(exc.position))
        raise YamlRefusal(
            where, f"invalid YAML: {exc.reason} (U+{int(exc.character):04X})"
        ) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise YamlRefusal(Position(1, 1), "the document is empty")
        document = Document(value=None)
        document.value = _build(loader, root, (), document)
        return document
    except yaml.MarkedYAMLError as exc:
        where = Position.of(exc.problem_mark or exc.context_mark)
        said = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlRefusal(where, f"invalid YAML: {said}") from None
    except yaml.YAMLError as exc:  # any other PyYAML error: no position known
        raise YamlRefusal(Position(1, 1), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _build(loader: _StrictLoader, node: Node, path: NodePath, doc: Document) -> Any:
    doc.values[path] = Position.of(node.start_mark)
    if isinstance(node, ScalarNode) and node.tag in _SCALAR_TAGS:
        return _scalar(loader, node)
    if isinstance(node, SequenceNode) and node.tag == _SEQ:
        return [_build(loader, item, (*path, i), doc) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode) and node.tag == _MAP:
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _key(loader, key_node)
            if key in mapping:
                raise YamlRefusal(Position.of(key_node.start_mark), f"duplicate key {key!r}")
            doc.keys[(*path, key)] = Position.of(key_node.start_mark)
            mapping[key] = _build(loader, value_node, (*path, key), doc)
        return mapping
    raise YamlRefusal(
        Position.of(node.start_mark),
        f"tag {node.tag!r} is not allowed; playbooks use plain strings, numbers, booleans, "
        "null, lists and mappings",
    )


def _key(loader: _StrictLoader, node: Node) -> str:
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        shown = node.value if isinstance(node, ScalarNode) else type(node).__name__
        raise YamlRefusal(
            Position.of(node.start_mark), f"mapping key {shown!r} is not a string; quote it"
        )
    return str(node.value)


def _scalar(loader: _StrictLoader, node: ScalarNode) -> Any:
    if node.tag == _STR:
        return str(node.value)
    construct: Callable[[_StrictLoader, ScalarNode], Any] = loader.yaml_constructors[node.tag]
    try:
        return construct(loader, node)
    except ValueError as exc:  # e.g. an int of more digits than Python converts
        where = Position.of(node.start_mark)
        raise YamlRefusal(where, f"bad {node.tag[len(_CORE) :]}: {exc}") from None
