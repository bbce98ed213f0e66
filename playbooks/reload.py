"""The loaded playbooks, replaced only by a complete, valid set.

`PlaybookSet.reload()` loads the whole directory again; if any file is invalid, nothing changes:
the engine keeps running on the last good set and the caller gets the `PlaybookError` to show
(a playbook is never half-loaded, and a typo pushed at 3 a.m. never stops responses).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mlwarden.playbooks.loader import load_playbooks
from mlwarden.playbooks.model import Playbook
from mlwarden.schemas.errors import PlaybookError


class PlaybookSet:
    """The current playbooks, and where they were loaded from (for `reload`)."""

    def __init__(
        self, playbooks: Sequence[Playbook], source: str | os.PathLike[str] | None = None
    ) -> None:
        _check_unique(playbooks)
        self._current = tuple(playbooks)
        self._source = None if source is None else Path(source)

    @classmethod
    def load(cls, source: str | os.PathLike[str]) -> PlaybookSet:
        """Load a file or directory; raises PlaybookError (the engine must not start)."""
        return cls(load_playbooks(source), source)

    @property
    def current(self) -> tuple[Playbook, ...]:
        return self._current

    def reload(self) -> PlaybookError | None:
        """Load the source again; on any error keep the current set and return the error."""
        if self._source is None:
            raise ValueError("this PlaybookSet was not loaded from a path; nothing to reload")
        try:
            self._current = tuple(load_playbooks(self._source))
        except PlaybookError as error:
            return error
        return None


def _check_unique(playbooks: Sequence[Playbook]) -> None:
    names = Counter(playbook.name for playbook in playbooks)
    duplicates = sorted(name for name, count in names.items() if count > 1)
    if duplicates:
        raise ValueError(f"playbook names must be unique (they key step records): {duplicates}")
