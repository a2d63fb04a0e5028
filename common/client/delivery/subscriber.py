"""One subscriber: a transport and, per event source, a lane (a bounded FIFO and the tasks draining it).

A lane's worker takes everything queued (up to the transport's batch size), sends it, and on a
retryable error sends the same messages again after a backoff delay: the head of the line waits, so
the order of one source's events is never broken. A subscriber with ``inflight=N`` gives each lane N
workers taking one message at a time: N deliveries at once, each retried on its own, order given up.
A transport reports progress as it goes (and through an error's ``accepted``): each message counts
as delivered the moment the subscriber has taken it, and is never resent; after a permanent error the
message at that index is dropped (counted and logged with its event id) and the rest go on. Sources
do not wait for each other: each has its own lane.

Every message carries its event's receipt: settled when the subscriber accepted it or it was given up
by policy, abandoned when a shutdown cut it off. With ``when_full: drop`` the receipt is settled as
soon as the message is queued (or dropped for a full queue), so one slow subscriber never holds the
source's window: a caller's answer then means "written to the stream", not "delivered".

A lane is stopped in stages: its workers take nothing new, one in the middle of a delivery gets
``stop_wait`` to finish it (so its outcome is known: delivered or dropped, counted once), then what is
left is dropped as ``shutdown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypedDict

from prometheus_client import Counter as PromCounter

from common import retry, tasks
from common.client.delivery.errors import PermanentDeliveryError, Progress, RetryableDeliveryError
from common.client.delivery.http import HttpTransport
from common.client.delivery.nats import NatsTransport
from common.client.delivery.settings import DeliverySettings
from common.client.metrics import (
    DELIVERY_LATENCY,
    DELIVERY_RETRIES,
    EVENTS_DELIVERED,
    EVENTS_DROPPED,
    LAST_SUCCESS,
    QUEUE_DEPTH,
    SUBSCRIBER_UP,
)
from common.client.model import Message, ReceivedEvent
from common.client.subscribers import SubscriberSpec
from common.logs import SourceLogger

_log = logging.getLogger(__name__)
DROP_LOG_INTERVAL = 10.0
"""Seconds between two log lines about one lane's drops for one reason; what falls between is summed
into the next line (every drop is counted in ``gateway_events_dropped_total`` as it happens)."""


class Transport(Protocol):
    """How events reach one subscriber. Errors are ``DeliveryError`` subclasses, never a library's."""

    name: str
    """``http``, ``nats`` or ``jetstream``."""
    max_batch: int
    """Most messages handed to one ``send``."""

    @property
    def problem(self) -> str | None:
        """Why the subscriber cannot be reached, when the transport knows (e.g. at start)."""

    @property
    def connected(self) -> bool:
        """Whether the subscriber was reachable at the last contact."""

    async def connect(self) -> None:
        """Prepare to send; never waits long for a peer that is down (sends retry until it is up)."""

    async def send(self, batch: Sequence[Message], progress: Progress) -> None:
        """Deliver ``batch`` in order, all of it, or raise an error whose ``accepted`` counts the head
        of the batch the subscriber took (never to be resent); ``progress`` hears of it as it goes."""

    async def close(self) -> None:
        """Release connections; idempotent."""


def transport_for(spec: SubscriberSpec, settings: DeliverySettings, *, gateway: str) -> Transport:
    """The transport for ``spec``'s scheme."""
    if spec.is_nats:
        return NatsTransport(spec, settings, gateway=gateway)
    return HttpTransport(spec, settings)


class SubscriberStatus(TypedDict):
    """What ``Subscriber.status`` reports."""

    subscriber: str
    connected: bool
    last_error: str | None
    queued: int
    delivered: int
    retried: int
    dropped: dict[str, int]
    up: bool
    """Reachable, and no delivery is waiting out a retry (``gateway_subscriber_up``)."""
    last_success: str | None
    """When it last accepted an event (RFC 3339, UTC), None before the first."""


@dataclass(eq=False)
class _Lane:
    source: str
    queue: asyncio.Queue[Message]
    log: SourceLogger
    delivered: PromCounter
    """This lane's child of the delivered counter, looked up once (``labels`` costs per call)."""
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    flights: list[list[Message]] = field(default_factory=list)
    """Per worker, the messages it has taken but not yet settled, oldest first."""
    busy: list[bool] = field(default_factory=list)
    """Per worker, whether it is delivering (not waiting for a message)."""
    closed: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the lane is stopped: wakes workers out of a retry delay."""
    logged: dict[str, float] = field(default_factory=dict)
    """Per drop reason, when a drop was last logged."""
    unlogged: Counter[str] = field(default_factory=Counter)
    """Per drop reason, drops counted since then but not logged yet (one line per ``DROP_LOG_INTERVAL``)."""

    @property
    def in_flight(self) -> int:
        return sum(len(flight) for flight in self.flights)


class Subscriber:
    """Delivers events to one subscriber, one ordered lane per event source."""

    def __init__(
        self,
        spec: SubscriberSpec,
        settings: DeliverySettings,
        *,
        gateway: str,
        transport: Transport | None = None,
    ) -> None:
        self.spec = spec
        self._settings = settings
        self._transport = transport or transport_for(spec, settings, gateway=gateway)
        self._lanes: dict[str, _Lane] = {}
        self._started = False
        self._closing = False
        self._last_error: str | None = None
        self._delivered = 0
        self._retried = 0
        self._dropped: Counter[str] = Counter()
        self._failing = False
        """The latest delivery attempt failed and is being retried."""
        self._last_success: float | None = None
        self._last_success_gauge = LAST_SUCCESS.labels(subscriber=spec.display)
        SUBSCRIBER_UP.labels(subscriber=spec.display).set_function(lambda: 1.0 if self.up else 0.0)
        self._depth = QUEUE_DEPTH.labels(subscriber=spec.display)
        self._latency = DELIVERY_LATENCY.labels(subscriber=spec.display)
        self._early = settings.when_full == "drop"
        """Receipts are settled at queueing (``drop``), not at delivery."""

    @property
    def display(self) -> str:
        """The subscriber URL without credentials."""
        return self.spec.display

    @property
    def up(self) -> bool:
        """Reachable (as far as the transport knows) and not retrying a failed delivery."""
        return self._transport.connected and not self._failing

    async def start(self) -> None:
        """Open the transport (a peer that is down is retried on delivery, not waited for here)."""
        await self._transport.connect()
        self._started = True

    async def put(self, message: Message) -> None:
        """Queue ``message`` on its source's lane; when full, wait (``block``) or drop it (``drop``)."""
        if not self._started:
            raise RuntimeError(f"subscriber {self.display}: put() before start()")
        if self._closing:
            lane = self._lane(message.source, create=False)
            self._drop(lane, [message], "shutdown", "the subscriber is closing", queued=False)
            return
        lane = self._lane(message.source)
        if lane.queue.full() and self._early:
            self._drop(lane, [message], "queue_full", "its queue is full", queued=False)
            return
        await lane.queue.put(message)
        self._depth.inc()
        if self._early and message.receipt is not None:
            message.receipt.settle()
        if lane.closed:  # the lane was stopped while this put waited for room
            self._discard(lane)

    def refuse(self, received: ReceivedEvent, reason: str, why: str) -> None:
        """Give up on an event that never became a message for this subscriber (it could not be
        written in its format): counted and logged as dropped for ``reason``, its receipt settled."""
        event_id = received.event.id or "(no id)"
        placeholder = Message(event_id, received.source, b"", receipt=received.receipt)
        self._drop(self._lane(received.source, create=False), [placeholder], reason, why, queued=False)

    async def remove_source(self, source: str, grace: float) -> None:
        """Drain ``source``'s lane for up to ``grace`` seconds, then stop it; leftovers are dropped."""
        lane = self._lanes.get(source)
        if lane is None:
            return
        await self._drain([lane], grace)
        await self._stop(lane)
        if self._lanes.get(source) is lane:
            del self._lanes[source]

    async def close(self, grace: float) -> None:
        """Stop taking events, drain for up to ``grace`` seconds, then stop; leftovers are dropped."""
        self._closing = True
        lanes = list(self._lanes.values())
        await self._drain(lanes, grace)
        for lane in lanes:
            await self._stop(lane)
        await self._transport.close()

    def status(self) -> SubscriberStatus:
        """Reachability, the last error (None once delivery works again) and the counters."""
        return SubscriberStatus(
            subscriber=self.display,
            connected=self._transport.connected,
            last_error=self._last_error or self._transport.problem,
            queued=sum(lane.queue.qsize() + lane.in_flight for lane in self._lanes.values()),
            delivered=self._delivered,
            retried=self._retried,
            dropped=dict(sorted(self._dropped.items())),
            up=self.up,
            last_success=None if self._last_success is None else _utc(self._last_success),
        )

    def _lane(self, source: str, *, create: bool = True) -> _Lane:
        lane = self._lanes.get(source)
        if lane is None:
            delivered = EVENTS_DELIVERED.labels(source=source, subscriber=self.display)
            lane = _Lane(
                source, asyncio.Queue(self._settings.queue_size), SourceLogger(_log, source), delivered
            )
            if create:
                self._lanes[source] = lane
                name = f"deliver {source!r} -> {self.display}"
                for index in range(self.spec.inflight):
                    flight: list[Message] = []
                    lane.flights.append(flight)
                    lane.busy.append(False)
                    worker = f"{name} #{index + 1}" if self.spec.inflight > 1 else name
                    task = tasks.start(self._work(lane, index, flight), name=worker, logger=lane.log)
                    lane.workers.append(task)
        return lane

    async def _work(self, lane: _Lane, index: int, flight: list[Message]) -> None:
        limit = self._transport.max_batch if self.spec.inflight == 1 else 1
        while not lane.closed:
            batch = [await lane.queue.get()]
            lane.busy[index] = True
            while len(batch) < limit and not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
            try:
                await self._deliver(lane, flight, batch)
            finally:
                lane.busy[index] = False
                for _ in range(len(batch)):
                    lane.queue.task_done()

    async def _deliver(self, lane: _Lane, flight: list[Message], batch: list[Message]) -> None:
        """Send ``batch`` until every message is delivered or dropped, retrying the unsent head; a
        stopped lane makes no new attempt (what is left is the stop's to drop)."""
        what = f"deliver {lane.source!r} -> {self.display}"
        backoff = self._settings.retry
        total = str(backoff.steps) if backoff.steps else "inf"
        flight[:] = batch  # settling and dropping shrink the flight; ``batch`` stays whole
        delays, attempt = backoff.delays(), 0
        while flight and not lane.closed:
            attempt += 1
            error = await self._attempt(lane, flight, what, attempt)
            if error is None:  # all delivered, or one refused and dropped: the rest start afresh
                delays, attempt = backoff.delays(), 0
                continue
            if error.accepted:  # progress: the failure is the next message's first
                delays, attempt = backoff.delays(), 1
            delay = next(delays, None)
            if delay is None:
                lane.log.error("%s: attempt #%d/%s failed; giving up: %s", what, attempt, total, error.detail)
                left = list(flight)
                flight.clear()
                self._drop(lane, left, "retries_exhausted", error.detail)
                return
            if error.retry_after is not None:
                delay = min(max(delay, error.retry_after), self._settings.retry_after_cap)
            self._retried += 1
            DELIVERY_RETRIES.labels(source=lane.source, subscriber=self.display).inc()
            lane.log.warning(
                "%s: attempt #%d/%s failed; will retry in %.2fs: %s",
                what,
                attempt,
                total,
                delay,
                error.detail,
            )
            await retry.sleep(delay, lane.stopping)

    async def _attempt(
        self, lane: _Lane, flight: list[Message], what: str, attempt: int
    ) -> RetryableDeliveryError | None:
        """Send the in-flight messages once, settling each as the subscriber takes it; the error to
        retry on."""
        sending = list(flight)
        taken = 0

        def progress(count: int) -> None:
            nonlocal taken
            if count > taken:
                self._settle(lane, flight, count - taken)
                taken = count

        try:
            await self._transport.send(sending, progress)
        except RetryableDeliveryError as exc:
            error = exc
        except PermanentDeliveryError as exc:
            progress(exc.accepted)
            self._last_error = exc.detail
            self._failing = False  # it answered: refused for good, nothing of this event is retried
            self._drop(lane, flight[:1], exc.reason, exc.detail)
            del flight[:1]
            return None
        except Exception as exc:  # untranslated: a transport bug, but retrying beats a dead lane
            lane.log.exception("%s: the transport raised an unexpected error.", what)
            error = RetryableDeliveryError(self.display, f"unexpected error: {exc!r}", accepted=taken)
        else:
            progress(len(sending))
            self._last_error, self._failing = None, False
            if attempt > 1:
                lane.log.info("%s: attempt #%d succeeded.", what, attempt)
            return None
        progress(error.accepted)
        self._last_error, self._failing = error.detail, True
        return error

    def _settle(self, lane: _Lane, flight: list[Message], count: int) -> None:
        if count > 0:
            self._last_success = time.time()
            self._last_success_gauge.set(self._last_success)
        """The first ``count`` messages of ``flight`` were accepted."""
        if count <= 0:
            return
        done = flight[:count]
        del flight[:count]
        now = time.monotonic()
        early = self._early
        for message in done:
            if message.received_at > 0:
                self._latency.observe(max(now - message.received_at, 0.0))
            if not early and message.receipt is not None:
                message.receipt.settle()
        lane.delivered.inc(count)
        self._delivered += count
        self._depth.dec(count)

    def _drop(
        self, lane: _Lane, messages: Sequence[Message], reason: str, why: str, *, queued: bool = True
    ) -> None:
        """Give up on ``messages`` (already out of the lane): count them and log their ids."""
        if not messages:
            return
        count = len(messages)
        EVENTS_DROPPED.labels(source=lane.source, subscriber=self.display, reason=reason).inc(count)
        self._dropped[reason] += count
        if queued:
            self._depth.dec(count)
        if not queued or not self._early:
            for message in messages:
                if message.receipt is None:
                    continue
                if reason == "shutdown":
                    message.receipt.abandon()
                else:
                    message.receipt.settle()
        now = time.monotonic()
        if reason != "shutdown" and now - lane.logged.get(reason, -DROP_LOG_INTERVAL) < DROP_LOG_INTERVAL:
            lane.unlogged[reason] += count  # a flood (a full queue, a subscriber refusing all): summed
            return
        lane.logged[reason] = now
        ids = ", ".join(m.event_id for m in messages[:10]) + (f" and {count - 10} more" if count > 10 else "")
        earlier = lane.unlogged.pop(reason, 0)
        since = f"; {earlier} more dropped for {reason} since the previous report" if earlier else ""
        level = logging.WARNING if reason in ("shutdown", "queue_full") else logging.ERROR
        lane.log.log(
            level, "Dropped %d event(s) for %s (%s: %s): %s%s", count, self.display, reason, why, ids, since
        )

    def _report_unlogged(self, lane: _Lane) -> None:
        """Log the drops a stopped lane counted but had not reported yet."""
        for reason, count in sorted(lane.unlogged.items()):
            lane.log.warning(
                "Dropped %d more event(s) for %s (%s) since the previous report.", count, self.display, reason
            )
        lane.unlogged.clear()

    async def _drain(self, lanes: Sequence[_Lane], grace: float) -> None:
        try:
            async with asyncio.timeout(grace):
                for lane in lanes:
                    await lane.queue.join()
        except TimeoutError:
            waiting = sum(lane.queue.qsize() + lane.in_flight for lane in lanes)
            _log.warning("%s: %d events still undelivered after %.1fs.", self.display, waiting, grace)

    async def _stop(self, lane: _Lane) -> None:
        """Stop ``lane`` in stages: nothing new is taken; a delivery under way gets ``stop_wait`` to
        finish; then the workers are cancelled and what is left is dropped as ``shutdown``."""
        lane.closed = True
        lane.stopping.set()
        idle = [w for w, busy in zip(lane.workers, lane.busy, strict=True) if not busy]
        for worker in idle:
            worker.cancel("the lane is stopping")
        busy = [w for w, busy in zip(lane.workers, lane.busy, strict=True) if busy]
        if busy:
            await asyncio.wait(busy, timeout=self._settings.stop_wait)
        timeout = self._settings.request_timeout
        # All at once: a worker still running would take the next queued message while another stops.
        await asyncio.gather(*(tasks.stop(w, timeout=timeout, logger=lane.log) for w in lane.workers))
        self._discard(lane)
        self._report_unlogged(lane)

    def _discard(self, lane: _Lane) -> None:
        """Drop what a stopped lane still holds."""
        left = [message for flight in lane.flights for message in flight]
        for flight in lane.flights:
            flight.clear()
        while not lane.queue.empty():
            left.append(lane.queue.get_nowait())
            lane.queue.task_done()
        self._drop(lane, left, "shutdown", "stopped before they could be delivered")


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
