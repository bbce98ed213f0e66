"""Baselines per model version: what "normal" looked like for one (model_id, model_version).

A detector that compares the present to a reference keeps one reference per model version, so
a rollout gets a baseline of its own instead of paging everyone because the new version
behaves differently. The reference is the version's first `size` observations (learned
online), or a saved one loaded at start. While a version is still learning, detectors that
need its reference stay silent for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

ModelKey = tuple[str, str]
"""(model_id, model_version)"""

T = TypeVar("T")


def model_key(model_id: str, model_version: str) -> ModelKey:
    return (model_id, model_version)


class Baselines(Generic[T]):
    """The first `size` observations of each model version, frozen once complete.

    `encode`/`decode` turn one observation into JSON-able form and back, for `state_dict`.
    """

    def __init__(
        self,
        size: int,
        encode: Callable[[T], Any] = lambda item: item,
        decode: Callable[[Any], T] = lambda raw: raw,
    ) -> None:
        if size < 1:
            raise ValueError("a baseline needs at least one observation")
        self.size = size
        self._encode = encode
        self._decode = decode
        self._learning: dict[ModelKey, list[T]] = {}
        self._frozen: dict[ModelKey, list[T]] = {}

    def observe(self, key: ModelKey, item: T) -> bool:
        """Add `item` to the version's reference if it is still learning; True if it was."""
        if key in self._frozen:
            return False
        items = self._learning.setdefault(key, [])
        items.append(item)
        if len(items) >= self.size:
            self._frozen[key] = self._learning.pop(key)
        return True

    def reference(self, key: ModelKey) -> list[T] | None:
        """The frozen reference of a version, or None while it is still learning."""
        return self._frozen.get(key)

    def set_reference(self, key: ModelKey, items: list[T]) -> None:
        """Install a reference built elsewhere (a saved baseline file)."""
        self._learning.pop(key, None)
        self._frozen[key] = list(items)

    def frozen_keys(self) -> Iterator[ModelKey]:
        return iter(self._frozen)

    def state_dict(self) -> dict[str, Any]:
        def encode(table: dict[ModelKey, list[T]]) -> list[Any]:
            return [[m, v, [self._encode(i) for i in items]] for (m, v), items in table.items()]

        return {"learning": encode(self._learning), "frozen": encode(self._frozen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def decode(rows: list[Any]) -> dict[ModelKey, list[T]]:
            return {(m, v): [self._decode(i) for i in items] for m, v, items in rows}

        self._learning = decode(state["learning"])
        self._frozen = decode(state["frozen"])
