"""Notices a worker that holds telemetry it is not reading, so it can be restarted.

Seen in the rejoin test (tests/integration/test_worker_rejoin.py), in 4 of 27 local runs:
after a rebalance whose SyncGroup failed (Tansu still listed the member that had just left),
the worker got its partitions back, processed a few batches, and then Faust's fetcher waited
for good inside its message callback (`Conductor.on_message`, before the stream's queue)
while every partition had thousands of unread records. Heartbeats went on, so the group
never moved the partitions elsewhere; nothing was logged; no alert could ever fire again.
The cause lies in Faust's flow control and was not pinned down.

Whatever the cause, a worker that has records waiting and has received none for
`stall_timeout_s` is not going to: `StallWatchdog.check` says so, and the worker exits with
`EXIT_STALLED` for its supervisor to restart it. A restart resumes from the detector
snapshots and the committed offsets, and replays nothing twice (streams/partitions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry".
EXIT_STALLED: Final = 75


@dataclass(frozen=True, slots=True)
class Stall:
    """What the watchdog saw: unread records and how long nothing arrived."""

    unread: Mapping[int, int]  # partition → records past the last one received
    quiet_s: float

    def __str__(self) -> str:
        waiting = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(self.unread.items()))
        return (
            f"the worker received no telemetry for {self.quiet_s:.1f} s while records wait "
            f"({waiting}); exiting with code {EXIT_STALLED} so its supervisor restarts it "
            "(state resumes from the detector snapshots and committed offsets)"
        )


class StallWatchdog:
    """Tracks when telemetry last arrived; `check` reports a stall past `timeout_s`.

    Only partitions this worker has received from since it was (last) assigned them are
    judged: for any other, the offset it should read from is not known here, and a guess
    would restart a healthy worker whose partition is simply quiet. Time is whatever
    monotonic clock the caller passes in, so the class itself never reads a clock.
    """

    # A log's end can sit one past its last record for good: a transaction's commit marker
    # takes an offset and is never delivered. More than that is records waiting.
    _MARKER_SLACK: Final = 1

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
        self._timeout_s = timeout_s
        self._next_offset: dict[int, int] = {}  # partition → first offset not yet received
        self._last_progress: float | None = None
        self.stall: Stall | None = None  # the first stall reported, kept for the exit code

    def assigned(self, now: float) -> None:
        """Partitions were (re)assigned: recovery and seeking start the clock afresh."""
        self._last_progress = now

    def revoked(self, partitions: Iterable[int]) -> None:
        """Forget partitions given up: another worker may read them on before they return."""
        for partition in partitions:
            self._next_offset.pop(partition, None)

    def received(self, partition: int, last_offset: int, now: float) -> None:
        """A batch of `partition` up to `last_offset` reached the detectors."""
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), last_offset + 1)
        self._last_progress = now

    def check(self, highwaters: Mapping[int, int | None], now: float) -> Stall | None:
        """A stall if a judged partition's log end (`highwaters`, None when not yet known)
        lies past the last record received and nothing arrived for the timeout."""
        if self._last_progress is None:
            return None
        quiet_s = now - self._last_progress
        if quiet_s < self._timeout_s:
            return None
        unread = {
            partition: highwater - self._next_offset[partition]
            for partition, highwater in highwaters.items()
            if highwater is not None
            and partition in self._next_offset
            and highwater - self._next_offset[partition] > self._MARKER_SLACK
        }
        if unread:
            self.stall = Stall(unread, quiet_s)
        return self.stall if unread else None
