"""Notices a worker whose committed offsets stand still while records wait, so it is restarted.

Seen in the rejoin test (tests/integration/test_worker_rejoin.py), in 4 of 27 local runs of its
freezing scenario, and once in CI after a killed worker was restarted
(test_response_worker): after a rebalance whose SyncGroup failed (Tansu still listed the
member that had just left or died), the worker got its partitions back and then Faust's
fetcher waited for good inside its message callback (`Conductor.on_message`, before the
stream's queue), with thousands of records unread. Heartbeats went on, so the group never
moved the partitions elsewhere; nothing was logged; no alert could fire or be handled again.
The cause lies in Faust's flow control and was not pinned down.

Whatever the cause, a worker whose committed offset on an assigned partition has not moved
for `timeout_s` while records wait past it is not going to move it: `StallWatchdog.check`
says so, and the worker exits with `EXIT_STALLED` for its supervisor to restart it. A restart
resumes from the detector snapshots and the committed offsets, and replays nothing twice
into the detectors (streams/partitions) or the playbooks (idempotent steps).

Committed offsets, not records received, are the measure: they cover every agent (telemetry,
alerts, commands) the same way, they are known for a partition the worker has not read from
yet, and they are what a restart resumes from. They come from `streams.lag.group_positions`,
as an operator's lag check would read them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

# EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry".
EXIT_STALLED: Final = 75

# Each offset read is a short-lived kafka-python client, which logs its connections, bootstrap
# and shutdown at INFO: a dozen lines per check in the worker's log. Its warnings still show.
logging.getLogger("kafka").setLevel(logging.WARNING)


def check_interval_s(timeout_s: float) -> float:
    """How often to read the offsets: a few times per timeout, within 1–30 s (each read is a
    short-lived Kafka client)."""
    return max(1.0, min(30.0, timeout_s / 4))


class Position(NamedTuple):
    """A partition's committed offset for the group and the end of its log."""

    committed: int
    end: int


PartitionKey = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class Stall:
    """What the watchdog saw: records waiting on partitions whose commits stood still."""

    waiting: Mapping[PartitionKey, int]
    still_s: float

    def __str__(self) -> str:
        waiting = ", ".join(
            f"{topic}[{partition}]: {count:,}"
            for (topic, partition), count in sorted(self.waiting.items())
        )
        return (
            f"the worker committed nothing for {self.still_s:.1f} s while records wait "
            f"({waiting}); exiting with code {EXIT_STALLED} so its supervisor restarts it "
            "(state resumes from the detector snapshots and committed offsets)"
        )


class StallWatchdog:
    """Tracks when each assigned partition's committed offset last moved.

    Time is whatever monotonic clock the caller passes in, so the class never reads a clock.
    """

    # A log's end can sit one past its last record for good: a transaction's commit marker
    # takes an offset and is never delivered. More than that is records waiting.
    _MARKER_SLACK: Final = 1

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
        self.timeout_s = timeout_s
        self._moved: dict[PartitionKey, tuple[int, float]] = {}  # committed, when it got there
        self.stall: Stall | None = None  # the first stall reported, kept for the exit code

    def restart(self) -> None:
        """A rebalance or table recovery is under way, or just ended: every clock starts again
        (recovering a long changelog may take minutes before the first commit)."""
        self._moved.clear()

    def check(self, positions: Mapping[PartitionKey, Position], now: float) -> Stall | None:
        """A stall if a partition in `positions` (this worker's, all of them) has records
        past its committed offset and that offset has not moved for the timeout. A partition
        seen for the first time starts its clock now."""
        moved: dict[PartitionKey, tuple[int, float]] = {}
        for key, position in positions.items():
            previous = self._moved.get(key)
            if previous is not None and previous[0] == position.committed:
                moved[key] = previous
            else:
                moved[key] = (position.committed, now)
        self._moved = moved  # partitions no longer held are forgotten
        waiting = {
            key: position.end - position.committed
            for key, position in positions.items()
            if position.end - position.committed > self._MARKER_SLACK
            and now - moved[key][1] >= self.timeout_s
        }
        if not waiting:
            return None
        still_s = min(now - moved[key][1] for key in waiting)
        self.stall = Stall(waiting, still_s)
        return self.stall
