"""One source's AMQP connection: one attempt to open it (connect, channel, declare, bind, consume),
its loss noticed at once, its close.

``open`` is one attempt; ``source`` retries it with ``common.retry``, at the start and after every
loss, so each failure is a numbered log line and the reason is in the source's status while the
stream stays open. A connection or channel the broker closes (a restart, a queue deleted, a
``PRECONDITION_FAILED``) sets ``lost`` with the broker's reason; deliveries stop there: a closed
channel never yields empty events (v0.11 did: argo-events#920); nor does a consumer the broker
cancels (its queue deleted): that too counts as lost, and the source opens again. Credentials, inline
in the URL or from secret references, are never shown: the URL only ever appears redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
from aiormq.abc import DeliveredMessage
from yarl import URL

from common.errors import SourceUnavailable
from common.kinds import SourceContext
from common.secrets import Secret, redact_url
from common.tls import client_context
from gateways.amqp import lenient
from gateways.amqp.config import AmqpConfig

CONNECT_TIMEOUT = 10.0
"""Seconds one attempt (TCP, TLS, login, channel, declarations) may take."""
CLOSE_TIMEOUT = 5.0
HEARTBEAT = 10
"""Seconds between AMQP heartbeats: a broker gone silent is noticed within about two of them."""
DEFAULT_PREFETCH = 64
"""Messages the broker may hand out unacknowledged when the client has no window (a v0.11 client)."""
FAULTS = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.AMQPError,
    OSError,
    TimeoutError,
    ConnectionError,
)

lenient.install()

Deliver = Callable[[DeliveredMessage], None]


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    text = str(exc) or repr(exc)
    return redact_url(f"{type(exc).__name__}: {text}")


class Connection:
    """The AMQP connection of one running source; ``open`` again after a loss."""

    def __init__(self, ctx: SourceContext, config: AmqpConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.lost = asyncio.Event()
        """Set when the broker closed the connection or the channel (``reason`` says why)."""
        self.reason = ""
        self.listeners: list[Callable[[], None]] = []
        """Told when ``lost`` is set (the reader looks again)."""
        self._closing = False
        self._secrets = {
            name: Secret(ref)
            for name, ref in (("username", config.username), ("password", config.password))
            if ref is not None and not isinstance(ref, str)
        }

    @property
    def prefetch(self) -> int:
        window = self.ctx.max_unacked or DEFAULT_PREFETCH
        return min(window, self.config.rate.limit) if self.config.rate is not None else window

    async def open(self, deliver: Deliver) -> str:
        """One attempt: connect, declare, bind and consume, each message handed to ``deliver``; the
        queue's name. ``SourceUnavailable`` (reported) when any step fails."""
        await self.close()
        self._closing = False
        self.lost = asyncio.Event()
        self.reason = ""
        config = self.config
        try:
            for secret in self._secrets.values():
                secret.load()
            url, ssl_context = (
                self._url(),
                client_context(config.tls, self.ctx.name) if config.uses_tls else None,
            )
        except SourceUnavailable as exc:
            self.ctx.report_connection(False, str(exc))
            raise
        step = f"connecting to {config.display_url}"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self.connection = await aio_pika.connect(
                    url, ssl_context=ssl_context, timeout=CONNECT_TIMEOUT
                )
                self.connection.close_callbacks.add(self._on_close)
                step = "opening a channel"
                self.channel = channel = await self.connection.channel(publisher_confirms=False)
                channel.close_callbacks.add(self._on_close)
                await channel.set_qos(prefetch_count=self.prefetch)
                step = f"declaring the {config.exchange_type} exchange {config.exchange_name!r}"
                exchange = await channel.declare_exchange(
                    config.exchange_name,
                    config.exchange_type,
                    durable=config.exchange.durable,
                    auto_delete=config.exchange.auto_delete,
                    internal=config.exchange.internal,
                )
                named = config.queue
                step = f"declaring the queue {named.name!r}" if named else "declaring an exclusive queue"
                queue = await self._declare_queue(channel)
                step = f"binding queue {queue.name!r} to {config.exchange_name!r} with {config.routing_key!r}"
                await queue.bind(exchange, config.routing_key)
                step = f"consuming from queue {queue.name!r}"
                # aiormq's consumer, under aio-pika's: its messages carry the properties as sent.
                underlay = await channel.get_underlay_channel()
                underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
                await underlay.basic_consume(queue.name, self._deliverer(deliver), no_ack=False)
        except BaseException as exc:
            await self.close()
            if not isinstance(exc, FAULTS):
                raise
            reason = f"{step} failed: {describe(exc)}"
            self.ctx.report_connection(False, reason)
            raise SourceUnavailable(reason, source=self.ctx.name) from exc
        return queue.name

    async def _declare_queue(self, channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
        queue = self.config.queue
        if queue is None:  # v0.11: a server-named, exclusive, non-durable queue
            return await channel.declare_queue("", durable=False, exclusive=True, auto_delete=False)
        return await channel.declare_queue(
            queue.name,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=dict(queue.arguments),
        )

    def _deliverer(self, deliver: Deliver) -> Callable[[DeliveredMessage], Any]:
        async def on_message(message: DeliveredMessage) -> None:
            if not self.lost.is_set():
                deliver(message)

        return on_message

    def _url(self) -> URL:
        url = URL(self.config.url).update_query(heartbeat=HEARTBEAT)
        user = self.config.username
        if user is None:
            return url
        logger = self.ctx.logger
        name = user if isinstance(user, str) else self._secrets["username"].text(logger)
        return url.with_user(name).with_password(self._secrets["password"].text(logger))

    def _on_close(self, sender: Any, exc: BaseException | None = None) -> None:
        if self._closing or self.lost.is_set():
            return
        what = "the channel" if isinstance(sender, aio_pika.abc.AbstractChannel) else "the connection"
        self.reason = f"the broker closed {what}: {describe(exc)}"
        self.lost.set()
        for listener in self.listeners:
            listener()

    def _on_cancel(self, frame: Any) -> None:
        """The broker cancelled the consumer (its queue was deleted, a node holding it went down):
        nothing more comes on this channel, so it counts as lost, and the source opens again."""
        if self._closing or self.lost.is_set():
            return
        self.reason = "the broker cancelled the consumer (was its queue deleted?)"
        self.lost.set()
        for listener in self.listeners:
            listener()

    async def close(self) -> None:
        """Close the channel and the connection (the broker requeues what was not acked); never raises."""
        self._closing = True
        connection, self.connection, self.channel = self.connection, None, None
        if connection is None:
            return
        with contextlib.suppress(*FAULTS, asyncio.CancelledError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await connection.close()
