"""Paging on-call: the `Pager` protocol and `ConsolePager`, the pager that needs no service.

A pager delivers a `Page` at most once per idempotency key. The playbook engine derives the key
from the incident and the step, so an alert replayed after a restart, or a second alert of the
same incident, hands the pager a key it has seen; the pager answers with what it reported the
first time instead of waking someone twice. Slack and PagerDuty pagers (later) pass the key on
as the service's own dedup key; `ConsolePager` remembers keys for the life of the process.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from typing import Any, Final, Protocol, TextIO

from pydantic import BaseModel, ConfigDict

from mlwarden.schemas.alert import AlertKind, Severity
from mlwarden.schemas.errors import ResponderError

_LOG: Final = logging.getLogger(__name__)
_LOG_LEVELS: Final = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}


class Page(BaseModel):
    """What on-call is told: the rendered message plus the alert facts a human triages by."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    severity: Severity
    summary: str
    incident_id: str
    alert_id: str
    kind: AlertKind
    detector: str
    model_id: str
    model_version: str
    client_id: str | None
    playbook: str


class Pager(Protocol):
    """Delivers pages; implementations must be idempotent per `idempotency_key`."""

    async def page(self, page: Page, idempotency_key: str) -> dict[str, Any]:
        """Deliver `page` once; return what the delivery reported (JSON-able).

        Raises `ResponderError` when delivery failed, with `retryable` saying whether another
        attempt can help.
        """
        ...


def _one_line(text: str) -> str:
    """Make untrusted text safe for one terminal line: no newlines or escape sequences."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def format_page(page: Page) -> str:
    """`PAGE [critical] abuse on model fraud-v1 client c-42: <message> (incident <id>)`."""
    client = f" client {page.client_id}" if page.client_id is not None else ""
    line = (
        f"PAGE [{page.severity.value}] {page.kind.value} on model {page.model_id}{client}: "
        f"{page.summary} (incident {page.incident_id})"
    )
    return _one_line(line)


class ConsolePager:
    """Pages by writing one line to a text stream and to the log: for development and demos.

    Remembers the last `remember` idempotency keys it delivered (oldest forgotten first, so a
    long-running process stays bounded); the incident store is what makes delivery durable.
    """

    def __init__(self, stream: TextIO | None = None, *, remember: int = 10_000) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._remember = remember
        self._delivered: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def page(self, page: Page, idempotency_key: str) -> dict[str, Any]:
        """Write the page once per key; a repeated key returns the first delivery's result."""
        if idempotency_key in self._delivered:
            self._delivered.move_to_end(idempotency_key)
            return dict(self._delivered[idempotency_key])
        line = format_page(page)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise ResponderError(
                f"console pager could not write: {exc}", retryable=isinstance(exc, OSError)
            ) from exc
        _LOG.log(_LOG_LEVELS[page.severity], "%s", line)
        result: dict[str, Any] = {"channel": "console", "line": line}
        self._delivered[idempotency_key] = result
        while len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)
        return dict(result)
