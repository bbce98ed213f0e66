"""Child processes that leave nothing behind: started in their own group, stopped as a group.

Each child gets its own session (Ctrl-C in a terminal reaches only the parent, which then
stops its children in order) and, on Linux, a parent-death signal: if the parent is killed
outright and cannot clean up, the kernel sends the child SIGTERM, so no orphan outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process_group(
    command: Sequence[str], *, env: Mapping[str, str], log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new process group, its output appended to `log`."""
    return subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the whole group (a clean shutdown), then SIGKILL whatever is left after `timeout_s`.

    The process must have been started with `start_new_session=True`, so its group holds it
    and every child it spawned, and nothing else.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    # Reap stragglers too: the leader may be gone while a child it spawned lives on.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
