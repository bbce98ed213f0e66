"""Load YAML playbooks into validated `Playbook` models, or refuse them with positions.

Every refusal is a `PlaybookError` whose message reads `file:line:col: field.path: problem`
(1-based, as editors count). Validation reports every problem of a file at once, one per line in
file order, and the exception's `location` and `field_path` are those of the first. A file that
has any problem loads nothing: there is no half-loaded playbook, and `load_playbooks` stops at
the first invalid file (in file-name order) so a bad library never starts partially.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.yaml_source import MAX_BYTES, Document, Position, YamlRefusal, parse
from mlwarden.schemas.errors import PlaybookError, SourceLocation

PLAYBOOK_SUFFIXES: Final = frozenset({".yaml", ".yml"})


def parse_playbook(text: str, source: str = "<string>") -> Playbook:
    """Validate playbook YAML `text`; `source` names it in error messages (usually a path)."""
    return _parse(text, source)[0]


def load_playbook(path: str | os.PathLike[str]) -> Playbook:
    """Read and validate one playbook file."""
    return _load_file(Path(path))[0]


def load_playbooks(path: str | os.PathLike[str]) -> list[Playbook]:
    """Load a playbook file, or every `*.yaml`/`*.yml` directly in a directory; sorted by name.

    Two playbooks with one name are refused: the name is part of every idempotency key, so a
    duplicate would make two different steps share one record.
    """
    root = Path(path)
    files = (
        sorted(p for p in root.iterdir() if p.suffix in PLAYBOOK_SUFFIXES and p.is_file())
        if root.is_dir()
        else [root]
    )
    seen: dict[str, SourceLocation] = {}
    playbooks: list[Playbook] = []
    for file in files:
        playbook, name_at = _load_file(file)
        if playbook.name in seen:
            raise PlaybookError(
                name_at,
                "name",
                f"playbook {playbook.name!r} is already defined at "
                f"{seen[playbook.name]}; names must be unique",
            )
        seen[playbook.name] = name_at
        playbooks.append(playbook)
    return sorted(playbooks, key=lambda playbook: playbook.name)


def _load_file(path: Path) -> tuple[Playbook, SourceLocation]:
    source = str(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PlaybookError(
            SourceLocation(source, 1, 1), "", f"cannot read playbook: {exc.strerror or exc}"
        ) from None
    if len(raw) > MAX_BYTES:
        raise PlaybookError(
            SourceLocation(source, 1, 1), "", f"file is over the {MAX_BYTES}-byte limit"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise PlaybookError(
            SourceLocation(source, line, column), "", "file is not UTF-8 text"
        ) from None
    return _parse(text, source)


def _parse(text: str, source: str) -> tuple[Playbook, SourceLocation]:
    try:
        document = parse(text)
    except YamlRefusal as refusal:
        where = SourceLocation(source, refusal.position.line, refusal.position.column)
        raise PlaybookError(where, "", refusal.problem) from None
    if not isinstance(document.value, dict):
        where = _at(source, document.values[()])
        raise PlaybookError(where, "", "a playbook is a mapping with name, match and steps")
    try:
        playbook = Playbook.model_validate(document.value)
    except ValidationError as exc:
        raise _combined(source, document, exc.errors(include_url=False)) from None
    return playbook, _at(source, document.values[("name",)])


def _combined(source: str, document: Document, details: list[ErrorDetails]) -> PlaybookError:
    """All of a file's problems in one PlaybookError: the first in file order, then the rest."""
    errors = sorted(
        (_one(source, document, detail) for detail in details),
        key=lambda error: (error.location.line, error.location.column),
    )
    first, rest = errors[0], errors[1:]
    return PlaybookError(
        first.location, first.field_path, "".join([first.problem, *(f"\n{e}" for e in rest)])
    )


def _one(source: str, document: Document, detail: ErrorDetails) -> PlaybookError:
    loc = tuple(detail["loc"])
    sub_path = (detail.get("ctx") or {}).get("path")
    if isinstance(sub_path, list):  # a model-level check that names the field it refuses
        loc = (*loc, *sub_path)
    kind = detail["type"]
    if kind == "extra_forbidden" and loc in document.keys:
        position = document.keys[loc]
        problem = f"unknown field {loc[-1]!r}{_suggestion(loc)}"
    elif kind == "missing":
        position = document.keys.get(loc[:-1]) or _nearest(document, loc)
        problem = f"missing required field {loc[-1]!r}"
    else:
        position = _nearest(document, loc)
        problem = detail["msg"]
        if kind in ("model_type", "dict_type"):
            problem = "expected a mapping"
        problem = problem.removeprefix("Value error, ")
        shown = detail.get("input")
        if (
            not isinstance(shown, dict | list)
            and kind not in _SHOWS_INPUT_ITSELF
            and repr(shown) not in problem
        ):
            problem += f" (got {_short(shown)})"
    return PlaybookError(_at(source, position), _field_path(loc), problem)


# Error types whose message already names or explains the offending input.
_SHOWS_INPUT_ITSELF: Final = frozenset(
    {"template", "step_type", "step_shape", "playbook_name", "detector_name", "escalation"}
)


def _nearest(document: Document, loc: tuple[str | int, ...]) -> Position:
    """Position of the deepest part of `loc` that exists in the YAML (the root always does)."""
    while loc not in document.values:
        loc = loc[:-1]
    return document.values[loc]


def _at(source: str, position: Position) -> SourceLocation:
    return SourceLocation(source, position.line, position.column)


def _field_path(loc: tuple[str | int, ...]) -> str:
    """`('steps', 0, 'page', 'message')` -> `steps[0].page.message`, as the YAML reads."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _suggestion(loc: tuple[str | int, ...]) -> str:
    """` (did you mean 'x'?); allowed: a, b` for the model that refused field `loc[-1]`."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed here: {', '.join(allowed)}"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at `loc`, walking the Playbook's fields."""
    model: type[BaseModel] | None = Playbook
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue  # a list item: the model of the list's items is already in hand
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `annotation`, looking through Optional, unions and list[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
