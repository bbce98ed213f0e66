"""Run the stream worker in this process until SIGINT/SIGTERM (Faust handles both cleanly)."""

from __future__ import annotations

import faust

from mlwarden.streams.app import create_app
from mlwarden.streams.settings import Settings
from mlwarden.streams.topics import ensure_topics


def run_worker(settings: Settings) -> None:
    """Create missing topics, then consume until stopped."""
    ensure_topics(settings.kafka)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
