"""Delivered messages to events, acked to the broker only once the client has delivered them.

Each event carries a ``delivered`` future. Resolved (every subscriber accepted the event, or delivery
gave it up by policy; with a v0.11 client, once written), its delivery tag is settled; the broker is
told with one ``basic.ack`` (``multiple``) per move of the contiguous settled prefix
(``common.acks``), so acks stay in order and cost one frame for many messages. Failed
(``NotDelivered``: the stream ended first), it is never acked: when the channel closes the broker
delivers it again (``redelivered``). The broker hands out at most the prefetch (the client's window)
unacknowledged, so what waits in the reader is bounded by it.

With ``rateLimit`` + ``ratePeriod`` at most ``rateLimit`` messages become events in each period
(fixed periods from the first message, as v0.11's polling loop meant): the rest wait in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

from aiormq.abc import DeliveredMessage

from common import tasks
from common.acks import Prefix
from common.events import SourceEvent, too_large
from common.kinds import SourceContext
from gateways.amqp import binding, lenient, metrics
from gateways.amqp.config import AmqpConfig, RateLimit
from gateways.amqp.connection import FAULTS, describe

PROPERTIES = {
    "correlation_id": "correlationid",
    "reply_to": "replyto",
    "expiration": "expiration",
    "message_type": "type",
    "user_id": "userid",
    "app_id": "appid",
    "priority": "priority",
    "delivery_mode": "deliverymode",
    "content_encoding": "contentencoding",
}
"""Basic properties (pamqp's names) -> their names in the ``properties`` extension."""


class Pacer:
    """At most ``limit`` messages per ``period`` seconds, in fixed periods."""

    def __init__(self, rate: RateLimit) -> None:
        self.rate = rate
        self._start: float | None = None
        self._taken = 0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message may go; 0 when it may go now (and it is counted)."""
        if self._start is None or now >= self._start + self.rate.period:
            self._start, self._taken = now if self._start is None else self._next(now), 0
        if self._taken < self.rate.limit:
            self._taken += 1
            return 0.0
        return self._start + self.rate.period - now

    def _next(self, now: float) -> float:
        assert self._start is not None
        periods = int((now - self._start) // self.rate.period)
        return self._start + periods * self.rate.period


class Acks:
    """The acks of one channel's messages, sent in order by one named task."""

    def __init__(self, ctx: SourceContext, on_settled: Callable[[], None]) -> None:
        self.ctx = ctx
        self._on_settled = on_settled
        self.prefix = Prefix()
        self.messages: dict[int, DeliveredMessage] = {}
        self.settled = asyncio.Event()
        self.settled.set()
        self._due: int | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._acked = metrics.ACKS.labels(source=ctx.name)

    def start(self) -> None:
        self._task = tasks.start(
            self._run(), name=f"AMQP acks of event source {self.ctx.name!r}", logger=self.ctx.logger
        )

    def hold(self, message: DeliveredMessage) -> asyncio.Future[None]:
        tag = message.delivery_tag or 0
        self.prefix.add(tag)
        self.messages[tag] = message
        self.settled.clear()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._settle(tag, done))
        return future

    def settle_now(self, message: DeliveredMessage) -> None:
        """``message`` never becomes an event (too large): acked in its turn, never delivered again."""
        self.hold(message).set_result(None)

    def _settle(self, tag: int, done: asyncio.Future[None]) -> None:
        failed = done.cancelled() or done.exception() is not None  # retrieved, whatever comes next
        if failed or self._closed:
            return  # not delivered: the broker delivers it again once the channel closes
        last = self.prefix.settle(tag)
        if last is not None:
            self._due = last
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        due, self._due = self._due, None
        if due is None:
            return
        message = self.messages.get(due)
        for tag in [t for t in self.messages if t <= due]:
            del self.messages[tag]
        if not self.messages:
            self.settled.set()
            self._on_settled()
        if message is None:
            return
        try:
            await message.channel.basic_ack(due, multiple=True)
        except FAULTS as exc:
            self.ctx.logger.warning(
                "Cannot ack delivery %d: %s; the broker delivers it again once the channel closes.",
                due,
                describe(exc),
            )
            return
        self._acked.inc()

    async def close(self) -> None:
        """Send what is due, then stop: what is still unsettled is the broker's to deliver again."""
        if self._task is not None:
            await tasks.stop(self._task, timeout=1.0, logger=self.ctx.logger, reason="source stopped")
        with contextlib.suppress(*FAULTS):
            await self._send()
        self._closed = True
        self.settled.set()
        self._on_settled()


class Reader:
    """The events of one source, across its channels (a new one after each loss)."""

    def __init__(self, ctx: SourceContext, config: AmqpConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.inbox: deque[DeliveredMessage] = deque()
        self.signal = asyncio.Event()
        """Set by an arrival, a drain, a loss or the last ack: the loop looks again."""
        self.acks = Acks(ctx, self.signal.set)
        self.draining = False
        self._pacer = Pacer(config.rate) if config.rate is not None else None
        self._too_large = metrics.DROPPED.labels(source=ctx.name, reason="too_large")
        self._redelivered = metrics.REDELIVERED.labels(source=ctx.name)

    def deliver(self, message: DeliveredMessage) -> None:
        self.inbox.append(message)
        self.signal.set()

    async def new_channel(self) -> None:
        """Before a channel consumes: delivery tags start again, and the old channel's messages (and
        acks) are the broker's."""
        await self.acks.close()
        self.inbox.clear()
        self.acks = Acks(self.ctx, self.signal.set)
        self.acks.start()

    def drain(self) -> None:
        self.draining = True
        self.signal.set()

    async def events(self, lost: asyncio.Event) -> AsyncGenerator[SourceEvent, None]:
        """Yield events until ``lost`` is set (returns) or the source is drained (waits for the acks);
        whoever sets ``lost`` sets ``signal`` too."""
        loop = asyncio.get_running_loop()
        while not self.draining and not lost.is_set():
            self.signal.clear()
            if not self.inbox:
                await self.signal.wait()
                continue
            if self._pacer is not None and (delay := self._pacer.delay(loop.time())) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.signal.wait()
                continue
            message = self.inbox.popleft()
            event = self._event(message)
            if event is not None:
                yield event
        while self.draining and not lost.is_set() and not self.acks.settled.is_set():
            self.signal.clear()
            await self.signal.wait()

    def _event(self, message: DeliveredMessage) -> SourceEvent | None:
        if message.redelivered:
            self._redelivered.inc()
        event = binding.to_event(self.ctx.name, _message(message))
        if too_large(event):
            self._too_large.inc()
            self.ctx.logger.warning(
                "Message %s (%d bytes) is too large for one event; acked, so it is not delivered again.",
                event.id,
                len(message.body),
            )
            self.acks.settle_now(message)
            return None
        return dataclasses.replace(event, delivered=self.acks.hold(message))


def _message(message: DeliveredMessage) -> binding.AmqpMessage:
    """The message as the binding reads it, from the properties as sent (unset ones are None)."""
    sent = message.header.properties
    properties = {
        name: getattr(sent, attribute)
        for attribute, name in PROPERTIES.items()
        if getattr(sent, attribute, None) not in (None, "")
    }
    headers = dict(sent.headers or {})
    problem = headers.pop(lenient.PROPERTIES_ERROR, None) if len(headers) == 1 else None
    return binding.AmqpMessage(
        body=message.body,
        routing_key=message.routing_key or "",
        exchange=message.exchange or "",
        redelivered=bool(message.redelivered),
        message_id=sent.message_id,
        timestamp=sent.timestamp,
        content_type=sent.content_type,
        headers=headers,
        properties=properties,
        received_at=datetime.now(UTC),
        properties_error=str(problem) if problem is not None else "",
    )
