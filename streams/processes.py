"""Child processes that leave nothing behind: started in their own group, stopped as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


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
