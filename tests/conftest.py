"""Shared fixtures: real servers, started once per session on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlwarden.streams.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The real Tansu broker (memory storage), the same code `mlwarden broker` runs."""
    with EmbeddedBroker() as running:
        yield running
