"""Faust's Kafka transport, with the consumer's fetch wait taken from settings.

faust-streaming builds the worker's aiokafka consumer with `fetch_max_wait_ms=1500` written
into its code (`AIOKafkaConsumerThread._create_worker_consumer` in
faust/transport/drivers/aiokafka.py); no Faust setting reaches it. That wait is how long the
broker may hold a fetch that finds no new records. Real Kafka answers such a fetch as soon as
a record arrives, so there the wait only bounds idle polling. Tansu (the embedded broker)
instead re-reads its storage at 1/2, 3/4, 7/8… of the wait (`FetchService::fetch` sleeps
`remaining / 2` between reads), so a record produced while the worker's fetch is held is seen
up to half the wait later: with Faust's 1500 ms, alerts were picked up in bursts every 750 ms.

`use_fetch_max_wait(app, ms)` gives `app` a transport whose worker consumer uses `ms`
instead; everything else is Faust's own code.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import ConsumerT


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor argument here and hands it to its Fetcher in start(),
        # which Faust calls after this returns. Fail loudly if a new aiokafka moves it.
        if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
            raise RuntimeError(
                f"aiokafka {aiokafka.__version__} no longer keeps _fetch_max_wait_ms: "
                "mlwarden.streams.faust_transport needs updating"
            )
        consumer._fetch_max_wait_ms = cast(FetchWaitTransport, transport).fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchWaitTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport; its worker consumer asks the broker to wait at most
    `fetch_max_wait_ms` for records."""

    Consumer: ClassVar[type[ConsumerT]] = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms


def use_fetch_max_wait(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Make `app`'s consumer fetch with `fetch_max_wait_ms`.

    Call it right after `faust.App(...)`, before anything reads `app.transport` or
    `app.consumer` (create_app does): a consumer already built keeps Faust's transport.
    """
    if fetch_max_wait_ms < 1:
        raise ValueError(f"fetch_max_wait_ms must be ≥ 1, not {fetch_max_wait_ms}")
    app.transport = FetchWaitTransport(
        app.conf.broker_consumer, app, fetch_max_wait_ms=fetch_max_wait_ms
    )
