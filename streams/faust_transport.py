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
instead, and that rejoins its group after a lost membership (below); everything else is Faust's
own code.

**Rejoining after the max poll interval.** aiokafka counts the time since the application last
polled (`getmany`); past `max_poll_interval_ms` its heartbeat task leaves the group (KIP-62),
and `GroupCoordinator.ensure_active_group` then refuses every rejoin until the application
polls again. Faust never does: the leave revokes its partitions, revoking stops its flow, and
its fetcher waits for the flow to resume, which takes an assignment, which takes a rejoin. The
worker sat there for good (measured: 355 s and counting, after one 30 s gap between polls).
Resetting the clock once after the revocation is not enough: a join that fails (or waits)
brings the check back with the clock running again. So from the end of a revocation until
the next non-empty assignment, the worker consumer stays *inside* a poll, as an application
blocked in `getmany` waiting for records would be: it holds no partitions, has acked what it
was processing, and is ready for records. The clock starts again at the assignment.
`broker_max_poll_records` (streams/app) keeps the gaps between polls short; this makes one long
gap cost a rejoin instead of the worker.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ClassVar, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT

_LOG = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assignment_wait = AssignmentWait()

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
        # The poll clock AssignmentWait holds while the worker waits for partitions.
        subscription = getattr(consumer, "_subscription", None)
        if not all(hasattr(subscription, name) for name in ("fetch_context", "fetcher_idle_time")):
            raise RuntimeError(
                f"aiokafka {aiokafka.__version__} no longer keeps its poll clock in "
                "_subscription.fetch_context: mlwarden.streams.faust_transport needs updating"
            )
        return consumer

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Runs on this thread's loop, inside aiokafka's _on_join_prepare; the idle check of
        # ensure_active_group comes after it, and again before every further join attempt.
        await super().on_partitions_revoked(revoked)
        if self._consumer is not None:
            self.assignment_wait.begin(self._consumer)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        await super().on_partitions_assigned(assigned, generation_id)
        if assigned:  # with nothing assigned there is nothing to poll: keep waiting
            self.assignment_wait.end()


class AssignmentWait:
    """Holds a consumer inside a poll while it waits for partitions (see the module docstring).

    aiokafka reads a consumer that is inside `getmany` as not idle (`fetcher_idle_time` is 0
    while `SubscriptionState.fetch_context()` is entered), and restarts the idle clock when the
    poll ends. `begin` enters that context, `end` leaves it; both are idempotent.
    """

    def __init__(self) -> None:
        self._poll: contextlib.ExitStack | None = None

    @property
    def waiting(self) -> bool:
        return self._poll is not None

    def begin(self, consumer: aiokafka.AIOKafkaConsumer) -> float:
        """Enter the poll; return how long the consumer had gone without one."""
        if self._poll is not None:
            return 0.0
        subscription = consumer._subscription
        idle_s: float = subscription.fetcher_idle_time
        max_poll_interval_s = consumer._max_poll_interval_ms / 1000
        if idle_s >= max_poll_interval_s:
            _LOG.warning(
                "the worker went %.0f s without polling Kafka (max poll interval %.0f s) and "
                "left its consumer group; its partitions are revoked, rejoining",
                idle_s,
                max_poll_interval_s,
            )
        self._poll = contextlib.ExitStack()
        self._poll.enter_context(subscription.fetch_context())
        return idle_s

    def end(self) -> None:
        """Leave the poll: the idle clock starts now."""
        if self._poll is not None:
            self._poll.close()
            self._poll = None


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class FetchWaitTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport; its worker consumer asks the broker to wait at most
    `fetch_max_wait_ms` for records, and rejoins its group after a lost membership."""

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
