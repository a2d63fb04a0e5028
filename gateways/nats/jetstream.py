"""JetStream: a durable pull consumer whose messages are acked only once the client has delivered them.

Why pull, not push: a pull consumer hands out messages only when asked, and the source asks only
when the stream takes events (the server stops resuming a source at its client's window). So nothing
piles up in the NATS client, no flow control or heartbeats are needed, and at most the window, the
stream's buffer and one fetch (``FETCH_BATCH``) are unacknowledged. A push consumer would send up to
``maxAckPending`` messages at once whatever the stream can take.

Each event carries a ``delivered`` future: resolved (every subscriber accepted the event, or gave it
up by policy; with a v0.11 client, once written) it acks its message; failed (``NotDelivered``: the
stream ended first) it naks it, so JetStream delivers it again to the next stream (``FETCH_WAIT``
later, so that no fetch the going source left open takes it back). While the gateway holds a
message, JetStream is told every half ``ackWait`` that it is in progress, so a slow subscriber causes
no redelivery. What was not settled when the source stops is nak'ed as the connection closes; after
a crash, JetStream delivers it again once ``ackWait`` has passed. So delivery is at least once: a
subscriber can see a message twice (same id), never zero times.

The durable is created if missing, updated if its changeable settings differ (``ackWait``,
``maxAckPending``); a setting JetStream cannot change (``deliverPolicy``) is refused and retried
with backoff, naming JetStream's reason, until an operator removes the old durable or the config
changes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import AsyncGenerator

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from common import tasks
from common.errors import SourceUnavailable
from common.events import SourceEvent, too_large
from common.kinds import SourceContext
from gateways.nats import binding, metrics
from gateways.nats.connection import FAULTS, Connection, describe, stop_if_cancelled

FETCH_BATCH = 64
"""Messages asked for at once: the stream's buffer (64 events), so one fetch fills it."""
FETCH_WAIT = 2.0
"""Seconds one fetch waits for a message: how long an idle source takes to notice a drain."""
API_TIMEOUT = 5.0
"""Seconds a JetStream API request (stream lookup, consumer create) may take."""
OUTCOMES = ("ack", "nak", "term", "in_progress")


class Answers:
    """The acks of one consumer's messages, sent by one named task as their events settle."""

    def __init__(self, ctx: SourceContext, ack_wait: float) -> None:
        self.ctx = ctx
        self.held: dict[int, Msg] = {}
        """Messages handed on as events and not yet answered, by ``id``."""
        self.settled = asyncio.Event()
        """Set while nothing is held."""
        self.settled.set()
        self._queue: deque[tuple[Msg, str]] = deque()
        self._wake = asyncio.Event()
        self._interval = ack_wait / 2
        self._closed = False
        self._counts = {o: metrics.ANSWERS.labels(source=ctx.name, outcome=o) for o in OUTCOMES}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = tasks.start(
            self._run(), name=f"JetStream acks of event source {self.ctx.name!r}", logger=self.ctx.logger
        )

    def hold(self, msg: Msg) -> asyncio.Future[None]:
        """The ``delivered`` future of ``msg``'s event: settling it answers ``msg``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held[id(msg)] = msg
        self.settled.clear()
        future.add_done_callback(lambda done: self._settle(msg, done))
        return future

    def give_back(self, msgs: list[Msg]) -> None:
        """``msgs`` were fetched but never became events: JetStream may deliver them to another reader."""
        self._queue.extend((msg, "nak") for msg in msgs)
        self._wake.set()

    def term(self, msg: Msg) -> None:
        """``msg`` can never become an event: JetStream is told not to deliver it again."""
        self._queue.append((msg, "term"))
        self._wake.set()

    def _settle(self, msg: Msg, done: asyncio.Future[None]) -> None:
        delivered = not done.cancelled() and done.exception() is None
        if self._closed:
            return  # answered (nak'ed) when the source stopped
        self._queue.append((msg, "ack" if delivered else "nak"))
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_progress = loop.time() + self._interval
        while True:
            stop_if_cancelled()
            self._wake.clear()
            if not self._queue:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_progress):
                        await self._wake.wait()
            await self._send_queued()
            if loop.time() >= next_progress:
                for msg in list(self.held.values()):
                    await self._answer(msg, "in_progress")
                next_progress = loop.time() + self._interval

    async def _send_queued(self) -> None:
        while self._queue:
            msg, outcome = self._queue.popleft()
            await self._answer(msg, outcome)
            if outcome != "term":
                self.held.pop(id(msg), None)
        if not self.held:
            self.settled.set()

    async def _answer(self, msg: Msg, outcome: str) -> None:
        try:
            if outcome == "nak":
                # Not at once: a fetch this source left open (it expires within FETCH_WAIT) would take
                # the message again, just as the source goes; the next reader gets it.
                await msg.nak(delay=FETCH_WAIT)
            else:
                await getattr(msg, outcome)()
        except (*FAULTS, nats.errors.MsgAlreadyAckdError) as exc:
            self.ctx.logger.warning(
                "Cannot %s message %s of stream %s: %s; JetStream delivers it again after ackWait.",
                outcome.replace("_", "-"),
                _sequence(msg),
                _stream(msg),
                describe(exc),
            )
            return
        self._counts[outcome].inc()

    async def close(self) -> None:
        """Stop the task; send what is queued, then nak every message still held (its event can no
        longer be acknowledged), so JetStream delivers it again at once."""
        if self._task is not None:
            await tasks.stop(self._task, timeout=1.0, logger=self.ctx.logger, reason="source stopped")
        self._closed = True
        await self._send_queued()
        held, self.held = list(self.held.values()), {}
        for msg in held:
            await self._answer(msg, "nak")
        self.settled.set()


def _sequence(msg: Msg) -> str:
    with contextlib.suppress(Exception):
        return str(msg.metadata.sequence.stream)
    return "?"


def _stream(msg: Msg) -> str:
    with contextlib.suppress(Exception):
        return msg.metadata.stream
    return "?"


class JetStreamReader:
    """The messages of one durable pull consumer."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.ctx = connection.ctx
        settings = connection.config.jetstream
        assert settings is not None
        self.settings = settings
        self.answers = Answers(self.ctx, settings.ack_wait)
        self._sub: JetStreamContext.PullSubscription | None = None
        self._batch = min(FETCH_BATCH, settings.max_ack_pending)
        self._draining = False
        self._wake = asyncio.Event()
        self._too_large = metrics.DROPPED.labels(source=self.ctx.name, reason="too_large")
        self._redelivered = metrics.REDELIVERED.labels(source=self.ctx.name)
        connection.listeners.append(self._wake.set)

    async def subscribe(self) -> None:
        """Find the stream, create or update the durable, bind to it; ``SourceUnavailable`` if not."""
        config = self.connection.config
        durable = config.durable_for(self.ctx.name)
        js = self.connection.client.jetstream(timeout=API_TIMEOUT)
        stream = self.settings.stream
        try:
            if not stream:
                stream = await js.find_stream_name_by_subject(config.subject)
            await js.add_consumer(stream, self._consumer_config(durable, config.subject))
            self._sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        except nats.js.errors.NotFoundError as exc:
            where = f"stream {stream!r}" if stream else f"a stream that captures {config.subject!r}"
            raise SourceUnavailable(
                f"JetStream has no {where} (the gateway never creates streams)", source=self.ctx.name
            ) from exc
        except FAULTS as exc:
            raise SourceUnavailable(
                f"cannot set up the durable {durable!r} on {stream or config.subject!r}: {describe(exc)}",
                source=self.ctx.name,
            ) from exc
        self.answers.start()
        self.ctx.logger.info(
            "Reading %r through the JetStream durable %r of stream %r on %s.",
            config.subject,
            durable,
            stream,
            config.display_url,
        )

    def _consumer_config(self, durable: str, subject: str) -> api.ConsumerConfig:
        settings = self.settings
        return api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            description="gateways nats event source",
            deliver_policy=api.DeliverPolicy(settings.deliver_policy),
            opt_start_seq=settings.start_sequence or None,
            opt_start_time=settings.start_time,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_ack_pending=settings.max_ack_pending,
            filter_subject=subject,
        )

    def drain(self) -> None:
        """Fetch nothing new; the source yields what it fetched and waits for it to settle."""
        self._draining = True
        self._wake.set()

    async def events(self) -> AsyncGenerator[SourceEvent, None]:
        """Fetch and yield events while the stream takes them; drained, wait until each is answered."""
        assert self._sub is not None
        connection = self.connection
        while not self._draining:
            stop_if_cancelled()
            if connection.lost:
                raise SourceUnavailable(
                    f"the connection to {connection.config.display_url} closed: {connection.problem}",
                    source=self.ctx.name,
                )
            if not connection.connected:
                self._wake.clear()
                await self._wake.wait()  # reconnected, lost for good, or drained
                continue
            try:
                messages = await self._sub.fetch(batch=self._batch, timeout=FETCH_WAIT)
            except TimeoutError:
                continue  # nothing new (or the connection dropped meanwhile: the loop sees it)
            except FAULTS as exc:
                if not connection.connected:
                    continue
                raise SourceUnavailable(
                    f"fetching from JetStream failed: {describe(exc)}", source=self.ctx.name
                ) from exc
            for index, msg in enumerate(messages):
                event = self._event(msg)
                if event is None:
                    continue
                try:
                    yield event
                except BaseException:  # closed mid-batch: the rest go back to JetStream at once
                    self.answers.give_back(messages[index + 1 :])
                    raise
        await self.answers.settled.wait()

    def _event(self, msg: Msg) -> SourceEvent | None:
        meta = msg.metadata
        if meta.num_delivered > 1:
            self._redelivered.inc()
        headers = tuple(msg.headers.items()) if msg.headers else ()
        info = binding.JetStreamMeta(meta.stream, meta.sequence.stream, meta.num_delivered, meta.timestamp)
        event = binding.to_event(
            self.ctx.name, binding.NatsMessage(msg.subject, msg.data, headers, jetstream=info)
        )
        if too_large(event):
            self._too_large.inc()
            self.ctx.logger.warning(
                "Message %d of stream %s (%d bytes) is too large for one event; told JetStream not to "
                "deliver it again.",
                meta.sequence.stream,
                meta.stream,
                len(msg.data),
            )
            self.answers.term(msg)
            return None
        return dataclasses.replace(event, delivered=self.answers.hold(msg))

    async def close(self) -> None:
        """Answer what is settled, nak what is not; the subscription goes with the connection."""
        await self.answers.close()
