"""The stall watchdog: restarts a worker whose commits stand still while records wait, and
never one that is merely quiet."""

from __future__ import annotations

import pytest

from mlwarden.streams.watchdog import EXIT_STALLED, Position, StallWatchdog, check_interval_s

TIMEOUT_S = 120.0
TELEMETRY = ("mlwarden.telemetry", 2)
ALERTS = ("mlwarden.alerts", 0)


def test_records_waiting_behind_a_commit_that_stood_still_past_the_timeout_is_a_stall() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    assert watchdog.check({TELEMETRY: Position(2866, 3000)}, now=10.0) is None
    assert watchdog.check({TELEMETRY: Position(2866, 3100)}, now=10.0 + TIMEOUT_S - 1) is None
    stall = watchdog.check({TELEMETRY: Position(2866, 3100)}, now=10.0 + TIMEOUT_S)
    assert stall is not None
    assert stall.waiting == {TELEMETRY: 234}
    assert watchdog.stall is stall
    assert "mlwarden.telemetry[2]: 234" in str(stall)
    assert f"code {EXIT_STALLED}" in str(stall)


def test_a_moving_commit_restarts_the_clock() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.check({TELEMETRY: Position(100, 5000)}, now=0.0)
    watchdog.check({TELEMETRY: Position(200, 5000)}, now=100.0)  # slow, but moving
    assert watchdog.check({TELEMETRY: Position(200, 5000)}, now=200.0) is None
    assert watchdog.check({TELEMETRY: Position(200, 5000)}, now=220.0) is not None


def test_a_caught_up_partition_is_quiet_not_stalled() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.check({ALERTS: Position(61, 61)}, now=0.0)
    assert watchdog.check({ALERTS: Position(61, 61)}, now=10_000.0) is None
    # A transaction's commit marker holds the offset past the last record for good.
    assert watchdog.check({ALERTS: Position(61, 62)}, now=20_000.0) is None
    assert watchdog.stall is None


def test_every_partition_is_judged_on_its_own() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.check({TELEMETRY: Position(0, 10), ALERTS: Position(5, 6)}, now=0.0)
    stall = watchdog.check({TELEMETRY: Position(9, 10), ALERTS: Position(5, 9)}, now=TIMEOUT_S)
    assert stall is not None
    assert stall.waiting == {ALERTS: 4}, "telemetry moved; the alert waiting did not"


def test_a_rebalance_or_recovery_restarts_every_clock() -> None:
    """Recovery after a rebalance may take a while before the first commit."""
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.check({TELEMETRY: Position(0, 500)}, now=0.0)
    watchdog.restart()
    assert watchdog.check({TELEMETRY: Position(0, 500)}, now=TIMEOUT_S) is None
    assert watchdog.check({TELEMETRY: Position(0, 500)}, now=2 * TIMEOUT_S) is not None


def test_a_partition_given_up_and_taken_back_starts_afresh() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.check({TELEMETRY: Position(0, 500)}, now=0.0)
    watchdog.check({}, now=50.0)  # revoked: another worker holds it
    assert watchdog.check({TELEMETRY: Position(0, 500)}, now=TIMEOUT_S + 10) is None


def test_the_offsets_are_read_a_few_times_per_timeout_within_bounds() -> None:
    assert check_interval_s(120) == 30
    assert check_interval_s(20) == 5
    assert check_interval_s(0.5) == 1
    assert check_interval_s(3600) == 30


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        StallWatchdog(0)
