"""Delivered messages to events; QoS 1/2 messages acknowledged to the broker, in order, only once the
client has delivered them.

Each QoS 1/2 event carries a ``delivered`` future. Resolved (every subscriber accepted it, or
delivery gave it up by policy; with a v0.11 client, once written), it is settled; the PUBACKs (QoS
2: PUBCOMPs) go out in the order the messages came, as MQTT requires: each once it and every message
before it are settled (``common.acks``). Failed (``NotDelivered``), it is never acknowledged: under a
persistent session the broker sends it again on the next connection (``dup``). The broker has at
most the receive maximum (MQTT 5: the client's window) unacknowledged messages out to the source,
which bounds what waits here.

QoS 0 has no acknowledgement and no flow control: the broker sends as fast as it can. At most
``QOS0_BACKLOG`` such messages wait for the stream; past that they are dropped, counted and logged
at most every ``DROP_LOG_INTERVAL`` (QoS 0 is at-most-once, and lossy under back-pressure).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncGenerator, Callable

import paho.mqtt.client as mqtt

from common.acks import Prefix
from common.events import SourceEvent, too_large
from common.kinds import SourceContext
from gateways.mqtt import binding, metrics

QOS0_BACKLOG = 10_000
DROP_LOG_INTERVAL = 10.0


class Acks:
    """The acknowledgements of one connection's QoS 1/2 messages, sent in arrival order."""

    def __init__(self, send: Callable[[int, int], None], wake: Callable[[], None]) -> None:
        self._send = send
        self._wake = wake
        self.prefix = Prefix()
        self._pending: deque[tuple[int, int, int]] = deque()
        """(position, mid, qos) of messages handed on and not yet acknowledged, in arrival order."""
        self._next = 0
        self._closed = False

    @property
    def unsettled(self) -> int:
        return self.prefix.unsettled

    def hold(self, message: mqtt.MQTTMessage) -> asyncio.Future[None]:
        position = self._next
        self._next += 1
        self.prefix.add(position)
        self._pending.append((position, message.mid, message.qos))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._settle(position, done))
        return future

    def _settle(self, position: int, done: asyncio.Future[None]) -> None:
        failed = done.cancelled() or done.exception() is not None  # retrieved, whatever comes next
        if failed or self._closed:
            return
        last = self.prefix.settle(position)
        if last is None:
            return
        while self._pending and self._pending[0][0] <= last:
            _, mid, qos = self._pending.popleft()
            self._send(mid, qos)
        self._wake()

    def close(self) -> None:
        """The connection is gone: its packet ids mean nothing on the next one."""
        self._closed = True


class Reader:
    """The events of one source, across its connections."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.inbox: deque[mqtt.MQTTMessage] = deque()
        self.signal = asyncio.Event()
        self.acks = Acks(lambda mid, qos: None, self.signal.set)
        self.draining = False
        self._dropped = metrics.DROPPED.labels(source=ctx.name, reason="qos0_backlog")
        self._too_large = metrics.DROPPED.labels(source=ctx.name, reason="too_large")
        self._duplicates = metrics.DUPLICATES.labels(source=ctx.name)
        self._unlogged = 0
        self._last_log = -DROP_LOG_INTERVAL

    def deliver(self, message: mqtt.MQTTMessage) -> None:
        if message.qos == 0 and len(self.inbox) >= QOS0_BACKLOG:
            self._drop()
            return
        self.inbox.append(message)
        self.signal.set()

    def _drop(self) -> None:
        self._dropped.inc()
        self._unlogged += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_log >= DROP_LOG_INTERVAL:
            self.ctx.logger.warning(
                "Dropped %d QoS 0 message(s): the stream is back-pressured and QoS 0 cannot wait "
                "(use qos: 1 for messages that must not be lost).",
                self._unlogged,
            )
            self._unlogged, self._last_log = 0, now

    def new_connection(self, send: Callable[[int, int], None]) -> None:
        """A new connection: what the old one delivered and was not acknowledged is the broker's."""
        self.acks.close()
        self.inbox.clear()
        self.acks = Acks(send, self.signal.set)

    def drain(self) -> None:
        self.draining = True
        self.signal.set()

    async def events(self, lost: asyncio.Event) -> AsyncGenerator[SourceEvent, None]:
        """Yield events until ``lost`` is set (returns) or the source is drained (waits for the acks);
        whoever sets ``lost`` sets ``signal`` too."""
        while not self.draining and not lost.is_set():
            self.signal.clear()
            if not self.inbox:
                await self.signal.wait()
                continue
            event = self._event(self.inbox.popleft())
            if event is not None:
                yield event
        while self.draining and not lost.is_set() and self.acks.unsettled:
            self.signal.clear()
            await self.signal.wait()

    def _event(self, message: mqtt.MQTTMessage) -> SourceEvent | None:
        if message.dup:
            self._duplicates.inc()
        event = binding.to_event(self.ctx.name, binding.from_paho(message))
        if too_large(event):
            self._too_large.inc()
            self.ctx.logger.warning(
                "A message on %r (%d bytes) is too large for one event; dropped.",
                message.topic,
                len(message.payload),
            )
            if message.qos:
                self.acks.hold(message).set_result(None)
            return None
        if message.qos == 0:
            return event
        return dataclasses.replace(event, delivered=self.acks.hold(message))
