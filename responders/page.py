"""Paging on-call: what a page says, the `Pager` protocol, the console pager, and `PageResponder`.

`PageResponder` is the `page` step: it turns the rendered message and the incident into a
`Page` and fans it out to the configured pagers (console, Slack, PagerDuty; `service` picks
one). As the incident changes, the engine calls its `follow_up`, which goes only to the pagers
that delivered the first page: Slack threads the repeat and updates the status, PagerDuty
acknowledges and resolves with the same `dedup_key`, the console prints the resolution.

Fan-out rule: a page that reached nobody fails the step (retryable when some pager's failure
was); a page that reached at least one human succeeds and reports who failed in `failed`. The
console counts as a human only when it is the only pager asked (the demo): in production
nobody reads the worker's stdout at 3 a.m.

Idempotency: a pager delivers a page at most once per idempotency key in this process;
across restarts, the engine records the step result before acknowledging the alert, and
follow-ups get that result back, so a recorded page is never sent twice. PagerDuty also
dedups on its side (`dedup_key`); Slack has no such key (see `responders.slack`).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol, TextIO
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from mlwarden.responders.base import IncidentChange, StepContext, StepResult
from mlwarden.responders.params import PageParams
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ResponderError

_LOG: Final = logging.getLogger(__name__)
_LOG_LEVELS: Final = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.CRITICAL,
}

PagerName = Literal["console", "slack", "pagerduty"]


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
    score: float | None = None
    threshold: float | None = None
    detected_at: datetime | None = None
    evidence_url: str | None = None
    """The Kibana search for the incident's evidence documents, when Kibana is configured."""
    approval_step: str | None = None
    """A step waiting for a human decision: pagers that can (Slack) offer Approve / Reject."""


@dataclass(frozen=True)
class PageUpdate:
    """A change of a paged incident, as a pager's `follow_up` receives it."""

    change: IncidentChange
    page: Page
    """The page as first delivered (rebuilt from the step's recorded result)."""
    latest: Page
    """The incident's latest alert, told the same way."""
    alert_count: int


class Pager(Protocol):
    """Delivers pages; implementations must be idempotent per `idempotency_key`."""

    async def page(
        self, page: Page, idempotency_key: str, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Deliver `page` once; return what the delivery reported (JSON-able, no secrets).

        Raises `ResponderError` when delivery failed, with `retryable` saying whether another
        attempt can help. `timeout_s` bounds the outbound calls (the step's remaining time).
        """
        ...

    async def follow_up(
        self,
        update: PageUpdate,
        earlier: dict[str, Any],
        idempotency_key: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Tell the service about `update`; `earlier` is what this pager's `page` returned."""
        ...


def _one_line(text: str) -> str:
    """Make untrusted text safe for one terminal line: no newlines or escape sequences."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def format_page(page: Page, verb: str = "PAGE") -> str:
    """`PAGE [critical] abuse on model fraud-v1 client c-42: <message> (incident <id>)`."""
    client = f" client {page.client_id}" if page.client_id is not None else ""
    line = (
        f"{verb} [{page.severity.value}] {page.kind.value} on model {page.model_id}{client}: "
        f"{page.summary} (incident {page.incident_id})"
    )
    return _one_line(line)


@dataclass(frozen=True)
class EvidenceLink:
    """Builds the Kibana Discover link to every evidence document of an incident.

    The evidence documents carry `mlwarden.incident.id`; the link opens Discover with the KQL
    query `mlwarden.incident.id:"<id>"` from an hour before the incident's first alert to now.
    `data_view_id` selects the evidence data view (Kibana otherwise opens its default one).
    """

    kibana_url: str
    data_view_id: str | None = None

    def for_incident(self, incident_id: str, since: datetime | None) -> str:
        kql = f'mlwarden.incident.id:"{_kql_escape(incident_id)}"'
        start = _rison_str((since - timedelta(hours=1)).isoformat()) if since else "now-7d"
        app_state = f"query:(language:kuery,query:{_rison_str(kql)})"
        if self.data_view_id is not None:
            app_state = f"index:{_rison_str(self.data_view_id)},{app_state}"
        state = f"_g=(time:(from:{start},to:now))&_a=({app_state})"
        return f"{self.kibana_url.rstrip('/')}/app/discover#/?{quote(state, safe='=&(),:!')}"


def retry_after_seconds(value: object) -> float | None:
    """An HTTP Retry-After header as seconds to wait: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _kql_escape(value: str) -> str:
    """Escape a value for a quoted KQL string (backslash and double quote)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _rison_str(value: str) -> str:
    """A rison string literal: always quoted, `!` and `'` escaped with `!` (rison's escape)."""
    return "'" + value.replace("!", "!!").replace("'", "!'") + "'"


class ConsolePager:
    """Pages by writing one line to a text stream and to the log: for development and demos.

    Remembers the last `remember` idempotency keys it delivered (oldest forgotten first, so a
    long-running process stays bounded); the incident store is what makes delivery durable.
    Follow-ups print `ACKNOWLEDGED …` / `RESOLVED …` lines; repeats are only logged, since the
    page already woke whoever watches the console.
    """

    def __init__(self, stream: TextIO | None = None, *, remember: int = 10_000) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._remember = remember
        self._delivered: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def page(
        self, page: Page, idempotency_key: str, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Write the page once per key; a repeated key returns the first delivery's result."""
        return self._write_once(idempotency_key, format_page(page), page.severity)

    async def notify(self, page: Page, idempotency_key: str) -> dict[str, Any]:
        """A `NOTIFY …` line: the notify step's fallback when Slack is not configured."""
        return self._write_once(idempotency_key, format_page(page, "NOTIFY"), page.severity)

    async def follow_up(
        self,
        update: PageUpdate,
        earlier: dict[str, Any],
        idempotency_key: str,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        if update.change is IncidentChange.REPEAT:
            _LOG.info("incident %s: %d alerts so far", update.page.incident_id, update.alert_count)
            return {"channel": "console", "skipped": "repeat"}
        verb = update.change.value.upper()
        return self._write_once(idempotency_key, format_page(update.page, verb), Severity.INFO)

    def _write_once(self, key: str, line: str, severity: Severity) -> dict[str, Any]:
        if key in self._delivered:
            self._delivered.move_to_end(key)
            return dict(self._delivered[key])
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise ResponderError(
                f"console pager could not write: {exc}", retryable=isinstance(exc, OSError)
            ) from exc
        _LOG.log(_LOG_LEVELS[severity], "%s", line)
        result: dict[str, Any] = {"channel": "console", "line": line}
        self._delivered[key] = result
        while len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)
        return dict(result)


def page_for(
    alert: Alert,
    ctx: StepContext,
    summary: str,
    *,
    severity: Severity | None = None,
    evidence: EvidenceLink | None = None,
    approval_step: str | None = None,
) -> Page:
    """The page that tells on-call about `alert` of the incident in `ctx`."""
    first = ctx.alerts[0] if ctx.alerts else alert
    return Page(
        severity=severity or alert.severity,
        summary=summary,
        incident_id=ctx.incident_id,
        alert_id=alert.alert_id,
        kind=alert.kind,
        detector=alert.detector,
        model_id=alert.model_id,
        model_version=alert.model_version,
        client_id=alert.client_id,
        playbook=ctx.playbook,
        score=alert.score,
        threshold=alert.threshold,
        detected_at=alert.detected_at,
        evidence_url=(
            evidence.for_incident(ctx.incident_id, first.detected_at) if evidence else None
        ),
        approval_step=approval_step,
    )


async def fan_out(
    calls: Mapping[str, Awaitable[dict[str, Any]]],
) -> tuple[dict[str, dict[str, Any]], dict[str, ResponderError]]:
    """Run every pager's call at once; split what delivered from what failed.

    Only `ResponderError` counts as a delivery failure; anything else is a bug and propagates.
    """
    names = list(calls)

    async def attempt(name: str) -> dict[str, Any] | ResponderError:
        try:
            return await calls[name]
        except ResponderError as exc:
            _LOG.warning("%s pager failed: %s", name, exc)
            return exc

    outcomes = await asyncio.gather(*(attempt(name) for name in names))
    delivered = {n: o for n, o in zip(names, outcomes, strict=True) if isinstance(o, dict)}
    failed = {n: o for n, o in zip(names, outcomes, strict=True) if isinstance(o, ResponderError)}
    return delivered, failed


def _failures(failed: Mapping[str, ResponderError]) -> dict[str, dict[str, Any]]:
    return {name: {"error": str(exc), "retryable": exc.retryable} for name, exc in failed.items()}


def _nobody_reached(
    asked: list[str], delivered: Mapping[str, Any], failed: Mapping[str, ResponderError]
) -> ResponderError:
    humans = [name for name in asked if name != "console"] or asked
    reasons = "; ".join(f"{name}: {exc}" for name, exc in failed.items())
    retry_after = [exc.retry_after_s for exc in failed.values() if exc.retry_after_s]
    return ResponderError(
        f"the page reached nobody ({', '.join(humans)} failed): {reasons}",
        retryable=any(failed[name].retryable for name in humans if name in failed),
        retry_after_s=max(retry_after) if retry_after else None,
    )


def _reached_someone(asked: list[str], delivered: Mapping[str, Any]) -> bool:
    humans = [name for name in asked if name != "console"] or asked
    return any(name in delivered for name in humans)


class PageResponder:
    """The `page` step: one page to every configured pager (or the one `service` names).

    `pagers` maps `console` / `slack` / `pagerduty` to configured pagers (see
    `paging_settings.build_pagers`); `evidence` adds the Kibana link to every page.
    """

    def __init__(
        self, pagers: Mapping[str, Pager], *, evidence: EvidenceLink | None = None
    ) -> None:
        self._pagers = dict(pagers)
        self._evidence = evidence

    async def __call__(self, params: PageParams, ctx: StepContext) -> StepResult:
        return await self._send(params, ctx, approval_step=None)

    async def ask_approval(self, params: PageParams, ctx: StepContext, *, step: str) -> StepResult:
        """Page with Approve / Reject buttons (Slack) for `step`, which waits for a human.

        Pagers without buttons tell on-call how to decide instead (`mlwarden incidents
        approve`); the decision comes back through `slack_approvals` or the CLI.
        """
        return await self._send(params, ctx, approval_step=step)

    async def follow_up(
        self, ctx: StepContext, earlier: StepResult, change: IncidentChange
    ) -> StepResult:
        """Tell the pagers that delivered the page what happened to the incident since."""
        update = update_from(ctx, earlier, change, self._evidence)
        if update is None:
            return {"change": change.value, "delivered": {}, "failed": {}}
        before: dict[str, dict[str, Any]] = earlier.get("delivered", {})
        asked = [name for name in before if name in self._pagers]
        delivered, failed = await fan_out(
            {
                name: self._pagers[name].follow_up(
                    update, before[name], ctx.idempotency_key, timeout_s=ctx.remaining_s()
                )
                for name in asked
            }
        )
        if asked and not _reached_someone(asked, delivered):
            raise _nobody_reached(asked, delivered, failed)
        return {"change": change.value, "delivered": delivered, "failed": _failures(failed)}

    async def _send(
        self, params: PageParams, ctx: StepContext, *, approval_step: str | None
    ) -> StepResult:
        asked = self._targets(params.service)
        page = page_for(
            ctx.alert,
            ctx,
            params.message,
            severity=params.severity,
            evidence=self._evidence,
            approval_step=approval_step,
        )
        delivered, failed = await fan_out(
            {
                name: self._pagers[name].page(
                    page, ctx.idempotency_key, timeout_s=ctx.remaining_s()
                )
                for name in asked
            }
        )
        if not _reached_someone(asked, delivered):
            raise _nobody_reached(asked, delivered, failed)
        return {
            "page": page.model_dump(mode="json"),
            "delivered": delivered,
            "failed": _failures(failed),
        }

    def _targets(self, service: str) -> list[str]:
        if service == "default":
            if not self._pagers:
                raise ResponderError(
                    "no pager is configured: set MLWARDEN_PAGING__CONSOLE=true, or a Slack "
                    "token and channel, or a PagerDuty routing key",
                    retryable=False,
                )
            return list(self._pagers)
        if service not in self._pagers:
            raise ResponderError(
                f"this page step asks for service {service!r}, which is not configured: "
                f"{_HOW_TO_CONFIGURE.get(service, '')} or use `service: default`",
                retryable=False,
            )
        return [service]


_HOW_TO_CONFIGURE: Final = {
    "slack": "set MLWARDEN_PAGING__SLACK_TOKEN and MLWARDEN_PAGING__SLACK_CHANNEL,",
    "pagerduty": "set MLWARDEN_PAGING__PAGERDUTY_ROUTING_KEY,",
    "console": "set MLWARDEN_PAGING__CONSOLE=true,",
}


def update_from(
    ctx: StepContext,
    earlier: StepResult,
    change: IncidentChange,
    evidence: EvidenceLink | None,
) -> PageUpdate | None:
    """Rebuild what was paged from the step's recorded result; None if nothing was."""
    recorded = earlier.get("page")
    if not isinstance(recorded, dict):
        return None
    page = Page.model_validate(recorded)
    latest = page_for(ctx.alert, ctx, ctx.alert.summary, evidence=evidence)
    return PageUpdate(change=change, page=page, latest=latest, alert_count=max(1, len(ctx.alerts)))
