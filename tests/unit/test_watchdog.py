"""The stall watchdog: restarts a worker that has telemetry waiting and reads none, and never
one that is merely quiet."""

from __future__ import annotations

import pytest

from mlwarden.streams.watchdog import EXIT_STALLED, StallWatchdog

TIMEOUT_S = 120.0


def test_records_waiting_and_none_received_past_the_timeout_is_a_stall() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.assigned(now=0.0)
    watchdog.received(2, last_offset=2865, now=10.0)
    assert watchdog.check({2: 3000}, now=10.0 + TIMEOUT_S - 1) is None, "not yet"
    stall = watchdog.check({2: 3000}, now=10.0 + TIMEOUT_S)
    assert stall is not None
    assert stall.unread == {2: 134}
    assert watchdog.stall is stall
    assert "partition 2: 134" in str(stall)
    assert str(EXIT_STALLED) in str(stall)


def test_a_caught_up_partition_is_quiet_not_stalled() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.assigned(now=0.0)
    watchdog.received(0, last_offset=99, now=1.0)
    assert watchdog.check({0: 100}, now=10_000.0) is None
    # A transaction's commit marker holds the offset past the last record for good.
    assert watchdog.check({0: 101}, now=10_000.0) is None
    assert watchdog.stall is None


def test_partitions_never_received_from_are_not_judged() -> None:
    """Their committed position is unknown here: a guess would restart a healthy worker."""
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.assigned(now=0.0)
    assert watchdog.check({0: 5000, 1: None}, now=10_000.0) is None


def test_arrivals_and_assignments_restart_the_clock() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.assigned(now=0.0)
    watchdog.received(1, last_offset=10, now=0.0)
    watchdog.received(3, last_offset=50, now=100.0)  # another partition still flows
    assert watchdog.check({1: 500}, now=150.0) is None
    watchdog.assigned(now=200.0)  # recovery after a rebalance may take a while
    assert watchdog.check({1: 500}, now=300.0) is None
    assert watchdog.check({1: 500}, now=320.0) is not None


def test_revoked_partitions_are_forgotten() -> None:
    """Another worker may read a revoked partition on; its old position means nothing."""
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.assigned(now=0.0)
    watchdog.received(0, last_offset=10, now=0.0)
    watchdog.revoked([0])
    watchdog.assigned(now=1.0)
    assert watchdog.check({0: 9_000}, now=10_000.0) is None


def test_received_offsets_never_move_back_on_replay() -> None:
    watchdog = StallWatchdog(TIMEOUT_S)
    watchdog.received(0, last_offset=200, now=0.0)
    watchdog.received(0, last_offset=150, now=1.0)  # replayed after a restart
    assert watchdog.check({0: 201}, now=1.0 + TIMEOUT_S) is None


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        StallWatchdog(0)
