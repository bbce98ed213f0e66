"""Playbook engine: matching, one page per incident (across alerts and restarts), audit records."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlwarden.detectors.base import TelemetryBatch
from mlwarden.detectors.query_budget import QueryBudgetConfig, QueryBudgetDetector
from mlwarden.playbooks.engine import PlaybookEngine
from mlwarden.playbooks.loader import load_playbooks, parse_playbook
from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.shipped import library_dir
from mlwarden.responders.page import ConsolePager, Page
from mlwarden.schemas.action import ActionRecord, StepState
from mlwarden.schemas.alert import Alert, AlertKind, Severity
from mlwarden.schemas.errors import ResponderError
from mlwarden.schemas.telemetry import TelemetryRecord

T0 = datetime(2026, 11, 23, 14, 5, tzinfo=UTC)


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "fp-1",
        "kind": AlertKind.ABUSE,
        "detector": "query_budget",
        "severity": Severity.WARNING,
        "model_id": "fraud-v1",
        "model_version": "3",
        "client_id": "c-42",
        "detected_at": T0,
        "emitted_at": T0,
        "score": 180.0,
        "threshold": 60.0,
        "summary": "client c-42 sent 30 queries",
    }
    return Alert(**(fields | changes))


def playbook(name: str, kinds: str, *messages: str, severity: str | None = None) -> Playbook:
    extra = f", severity: {severity}" if severity else ""
    steps = "".join(f"  - page: {{message: {json.dumps(m)}{extra}}}\n" for m in messages)
    return parse_playbook(f"name: {name}\nmatch: {{kinds: [{kinds}]}}\nsteps:\n{steps}")


class Clock:
    """A clock that advances one second per reading, so records carry distinct times."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class RecordingPager:
    """Delivers every call (no dedup of its own), so only the engine can prevent repeats."""

    def __init__(self, fail_with: ResponderError | None = None) -> None:
        self.pages: list[tuple[Page, str]] = []
        self.fail_with = fail_with

    async def page(self, page: Page, idempotency_key: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # yield, as a real HTTP call would, so handles can interleave
        if self.fail_with is not None:
            raise self.fail_with
        self.pages.append((page, idempotency_key))
        return {"delivered": len(self.pages)}


def engine(
    playbooks: list[Playbook], pager: RecordingPager, incidents: dict[str, Any] | None = None
) -> PlaybookEngine:
    return PlaybookEngine(playbooks, pager, {} if incidents is None else incidents, Clock())


def states(records: list[ActionRecord]) -> list[tuple[str, int, StepState]]:
    return [(r.playbook, r.step_index, r.state) for r in records]


async def test_only_matching_playbooks_run() -> None:
    pager = RecordingPager()
    eng = engine([playbook("drift", "drift", "d"), playbook("abuse", "abuse", "a")], pager)
    records = await eng.handle(make_alert())
    assert states(records) == [("abuse", 0, StepState.RUNNING), ("abuse", 0, StepState.SUCCEEDED)]
    assert [page.summary for page, _ in pager.pages] == ["a"]
    assert await eng.handle(make_alert(kind=AlertKind.EXTRACTION, fingerprint="fp-2")) == []


async def test_records_go_running_then_succeeded_with_the_responders_result() -> None:
    pager = RecordingPager()
    clock = Clock()
    eng = PlaybookEngine([playbook("abuse", "abuse", "hi {{ alert.client_id }}")], pager, {}, clock)
    running, succeeded = await eng.handle(make_alert())
    for record in (running, succeeded):
        assert record.incident_id == "fp-1"
        assert record.alert_id == "a-1"
        assert record.idempotency_key == "fp-1/abuse/0"
        assert record.step_type == "page"
        assert record.attempt == 1
    assert running.state is StepState.RUNNING
    assert running.result == {}
    assert succeeded.state is StepState.SUCCEEDED
    assert succeeded.result == {"delivered": 1}
    assert running.at == T0 + timedelta(seconds=1)
    assert succeeded.at == T0 + timedelta(seconds=2)
    [(page, key)] = pager.pages
    assert key == "fp-1/abuse/0"
    assert page.summary == "hi c-42"
    assert page.incident_id == "fp-1"
    assert page.severity is Severity.WARNING
    assert page.playbook == "abuse"


async def test_the_step_severity_overrides_the_alerts() -> None:
    pager = RecordingPager()
    await engine([playbook("abuse", "abuse", "x", severity="critical")], pager).handle(make_alert())
    assert pager.pages[0][0].severity is Severity.CRITICAL


async def test_one_page_per_incident_across_repeated_alerts() -> None:
    pager = RecordingPager()
    eng = engine([playbook("abuse", "abuse", "first", "second")], pager)
    first = await eng.handle(make_alert(alert_id="a-1"))
    assert len(first) == 4
    assert await eng.handle(make_alert(alert_id="a-1")) == []  # replayed
    assert await eng.handle(make_alert(alert_id="a-2")) == []  # same incident, new alert
    assert [key for _, key in pager.pages] == ["fp-1/abuse/0", "fp-1/abuse/1"]
    await eng.handle(make_alert(alert_id="a-3", fingerprint="fp-2"))  # a new incident pages
    assert len(pager.pages) == 4


async def test_concurrent_alerts_of_one_incident_page_once() -> None:
    pager = RecordingPager()
    eng = engine([playbook("abuse", "abuse", "x")], pager)
    results = await asyncio.gather(*(eng.handle(make_alert(alert_id=f"a-{i}")) for i in range(5)))
    assert len(pager.pages) == 1
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 2]


async def test_a_restarted_engine_over_the_same_store_does_not_page_again() -> None:
    incidents: dict[str, Any] = {}
    books = [playbook("abuse", "abuse", "x")]
    before = RecordingPager()
    await engine(books, before, incidents).handle(make_alert())
    # The store holds JSON only, as a Faust table's changelog would: restore it from JSON.
    restored = json.loads(json.dumps(incidents))
    after = RecordingPager()
    assert await engine(books, after, restored).handle(make_alert(alert_id="a-2")) == []
    assert await engine(books, after, incidents).handle(make_alert(alert_id="a-3")) == []
    assert len(before.pages) == 1
    assert after.pages == []
    entry = restored["fp-1"]["steps"]["abuse/0"]
    assert entry["state"] == "succeeded"
    assert entry["idempotency_key"] == "fp-1/abuse/0"


@pytest.mark.parametrize("retryable", [True, False])
async def test_a_failing_pager_gives_a_failed_record_and_a_later_retry(retryable: bool) -> None:
    incidents: dict[str, Any] = {}
    books = [playbook("abuse", "abuse", "x")]
    failing = RecordingPager(fail_with=ResponderError("pager said 500", retryable=retryable))
    running, failed = await engine(books, failing, incidents).handle(make_alert())
    assert running.state is StepState.RUNNING
    assert failed.state is StepState.FAILED
    assert failed.error == "pager said 500"
    assert failed.result == {"retryable": retryable}
    assert incidents["fp-1"]["steps"]["abuse/0"]["state"] == "failed"
    working = RecordingPager()
    retried = await engine(books, working, incidents).handle(make_alert(alert_id="a-2"))
    assert [(r.state, r.attempt) for r in retried] == [
        (StepState.RUNNING, 2),
        (StepState.SUCCEEDED, 2),
    ]
    assert len(working.pages) == 1


async def test_a_failed_step_does_not_stop_the_next_one() -> None:
    pager = RecordingPager()
    books = [playbook("abuse", "abuse", "{{ alert.evidence.absent }}", "still paged")]
    records = await engine(books, pager).handle(make_alert())
    assert [r.state for r in records] == [
        StepState.RUNNING,
        StepState.FAILED,
        StepState.RUNNING,
        StepState.SUCCEEDED,
    ]
    assert records[1].error is not None
    assert "absent" in records[1].error
    assert records[1].result == {"retryable": False}
    assert [page.summary for page, _ in pager.pages] == ["still paged"]


def test_duplicate_playbook_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        engine([playbook("p", "abuse", "x"), playbook("p", "drift", "y")], RecordingPager())


async def test_shipped_abuse_playbook_pages_on_the_console_once_per_incident() -> None:
    stream = io.StringIO()
    clock: Callable[[], datetime] = Clock()
    eng = PlaybookEngine(load_playbooks(library_dir()), ConsolePager(stream), {}, clock)
    records = await eng.handle(make_alert())
    await eng.handle(make_alert(alert_id="a-2"))
    assert [r.state for r in records] == [StepState.RUNNING, StepState.SUCCEEDED]
    [line] = stream.getvalue().splitlines()
    assert line.startswith("PAGE [warning] abuse on model fraud-v1 client c-42: Client c-42 ")
    assert "180.0 queries/min" in line
    assert "budget of 60.0/min" in line
    assert line.endswith("client c-42 sent 30 queries (incident fp-1)")
    assert records[1].result["line"] == line


async def test_the_query_budget_detectors_alert_is_paged_by_the_shipped_playbook() -> None:
    detector = QueryBudgetDetector(
        QueryBudgetConfig.model_validate({"rate_per_minute": 60, "burst": 5})
    )
    burst = [
        TelemetryRecord(
            event_id=f"e-{i}",
            timestamp=T0.timestamp(),
            model_id="fraud-v1",
            model_version="3",
            client_id="c-42",
            prediction=0,
        )
        for i in range(10)
    ]
    [alert] = detector.update(TelemetryBatch(burst))
    stream = io.StringIO()
    eng = PlaybookEngine(load_playbooks(library_dir()), ConsolePager(stream), {}, Clock())
    records = await eng.handle(alert)
    assert [r.state for r in records] == [StepState.RUNNING, StepState.SUCCEEDED]
    assert stream.getvalue().startswith("PAGE [warning] abuse on model fraud-v1 client c-42: ")
