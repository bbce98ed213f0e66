"""The worker's consumer fetches with the configured wait, not Faust's fixed 1500 ms.

On Tansu a held fetch sees a new record only at 1/2, 3/4… of its wait (streams/faust_transport),
so this wait is what bounds how long an alert sits before the worker picks it up.
"""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from mlwarden.streams.app import create_app
from mlwarden.streams.faust_transport import FetchWaitTransport, use_fetch_max_wait
from mlwarden.streams.settings import KafkaSettings, Settings, WorkerSettings

FAUST_FIXED_WAIT_MS = 1500


async def worker_fetch_wait_ms(app: faust.App) -> int:
    """The fetch wait of the aiokafka consumer that Faust builds for `app`'s worker."""
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)  # what on_start() starts
    try:
        wait: int = consumer._fetch_max_wait_ms  # handed to aiokafka's Fetcher by start()
        return wait
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # the consumer thread's own loop, never started here


async def test_the_worker_fetches_with_the_configured_wait(tmp_path: Path) -> None:
    settings = Settings(
        kafka=KafkaSettings(fetch_max_wait_ms=37),
        worker=WorkerSettings(data_dir=tmp_path, web_port=0),
    )
    app = create_app(settings)
    assert isinstance(app.transport, FetchWaitTransport)
    assert await worker_fetch_wait_ms(app) == 37


async def test_a_bare_faust_app_keeps_faust_s_wait(tmp_path: Path) -> None:
    """The control: without use_fetch_max_wait, Faust's own 1500 ms (what made the bursts)."""
    bare = faust.App("bare", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    assert await worker_fetch_wait_ms(bare) == FAUST_FIXED_WAIT_MS
    configured = faust.App("configured", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    use_fetch_max_wait(configured, 20)
    assert await worker_fetch_wait_ms(configured) == 20


def test_a_wait_below_one_ms_is_refused(tmp_path: Path) -> None:
    app = faust.App("bare", broker="kafka://127.0.0.1:9", datadir=str(tmp_path))
    with pytest.raises(ValueError, match="≥ 1"):
        use_fetch_max_wait(app, 0)
