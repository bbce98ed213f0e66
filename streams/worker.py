"""Run the stream worker in this process until SIGINT/SIGTERM (Faust handles both cleanly).

It exits with code 75 (`watchdog.EXIT_STALLED`) when it stopped itself because it stalled;
run it under a supervisor that restarts it then (systemd `Restart=on-failure`, Kubernetes).
"""

from __future__ import annotations

import faust

from mlwarden.detectors.registry import build_pipeline
from mlwarden.streams.app import create_app
from mlwarden.streams.settings import Settings
from mlwarden.streams.topics import ensure_topics
from mlwarden.streams.watchdog import EXIT_STALLED, StallWatchdog


def limit_torch_threads(threads: int) -> None:
    """Cap torch's intra-op threads for detectors that use it (see WorkerSettings)."""
    import torch

    torch.set_num_threads(threads)


def run_worker(settings: Settings) -> None:
    """Create missing topics, then consume until stopped."""
    limit_torch_threads(settings.worker.torch_threads)
    # One pipeline built before Kafka is touched: a bad baseline file (or detector config) is a
    # ConfigError now, not when a partition's first batch builds its pipeline.
    build_pipeline(settings.detectors)
    ensure_topics(settings.kafka)
    watchdog = StallWatchdog(settings.worker.stall_timeout_s)
    app = create_app(settings, watchdog)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if watchdog.stall is not None:  # stopped itself: ask the supervisor for a restart
            raise SystemExit(EXIT_STALLED) from None
        raise
