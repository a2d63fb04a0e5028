"""Core NATS: a plain subscription (v0.11's), or a queue group's, read as the stream takes events.

nats-py hands each message to ``_on_message`` in its own per-subscription task; that waits for room
in a small hand-off (``HANDOFF``), so while the stream is back-pressured messages wait in nats-py's
pending queue. Core NATS cannot be told to stop sending: past ``PENDING_MESSAGES`` or
``PENDING_BYTES`` nats-py drops what arrives as a slow consumer (counted and logged by
``connection``). Core NATS is at most once; JetStream is the lossless mode.

Drained, the subscription is drained the NATS way: unsubscribed, a round trip to the server so
everything it routed before has arrived, then every message received is still yielded; then the
source returns. Stopped, the subscription and its pending messages go with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common import tasks
from common.errors import SourceUnavailable
from common.events import SourceEvent, too_large
from common.server.channel import Channel, ChannelClosed
from gateways.nats import binding, metrics
from gateways.nats.connection import FAULTS, Connection, describe

HANDOFF = 16
"""Messages between nats-py's delivery task and the source; the rest wait in nats-py's pending queue."""
PENDING_MESSAGES = 65_536
"""Messages nats-py holds for one subscription before it drops new ones (its default is 512 Ki)."""
PENDING_BYTES = 64 * 1024 * 1024
"""Bytes nats-py holds for one subscription before it drops new ones (its default is 128 MiB)."""
FLUSH_TIMEOUT = 5.0
"""Seconds the server may take to confirm a subscription (or, draining, an unsubscription)."""


def message_of(msg: Msg, received_at: datetime) -> binding.NatsMessage:
    """nats-py's message as the binding sees it."""
    headers = tuple(msg.headers.items()) if msg.headers else ()
    return binding.NatsMessage(msg.subject, msg.data, headers, received_at)


class CoreReader:
    """The messages of one core NATS subscription."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.ctx = connection.ctx
        self._handoff: Channel[binding.NatsMessage] = Channel(HANDOFF)
        self._sub: Subscription | None = None
        self._draining: asyncio.Task[None] | None = None
        self._too_large = metrics.DROPPED.labels(source=self.ctx.name, reason="too_large")
        connection.listeners.append(self._on_change)

    def _on_change(self) -> None:
        if self.connection.lost:
            self._handoff.close()

    async def subscribe(self) -> None:
        """Subscribe, and confirm it with a round trip (v0.11: ``Flush``); ``SourceUnavailable`` if not."""
        config = self.connection.config
        client = self.connection.client
        try:
            self._sub = await client.subscribe(
                config.subject,
                queue=config.queue_group,
                cb=self._on_message,
                pending_msgs_limit=PENDING_MESSAGES,
                pending_bytes_limit=PENDING_BYTES,
            )
            await client.flush(timeout=FLUSH_TIMEOUT)  # type: ignore[arg-type]
        except FAULTS as exc:
            raise SourceUnavailable(
                f"cannot subscribe to {config.subject!r}: {describe(exc)}", source=self.ctx.name
            ) from exc
        group = f" in queue group {config.queue_group!r}" if config.queue_group else ""
        self.ctx.logger.info(
            "Subscribed to %r%s on %s (core NATS).", config.subject, group, config.display_url
        )

    async def _on_message(self, msg: Msg) -> None:
        # Stopping (the hand-off is closed): what arrives now is not taken; core NATS keeps nothing.
        with contextlib.suppress(ChannelClosed):
            await self._handoff.send(message_of(msg, datetime.now(UTC)))

    def drain(self) -> None:
        """Take nothing new: unsubscribe, let what the server already routed arrive, then end."""
        if self._draining is None:
            self._draining = tasks.start(
                self._drain(),
                name=f"draining the NATS subscription of {self.ctx.name!r}",
                logger=self.ctx.logger,
            )

    async def _drain(self) -> None:
        try:
            if self._sub is not None and self.connection.connected:
                with contextlib.suppress(*FAULTS):
                    await self._sub.drain()  # type: ignore[no-untyped-call]
        finally:
            self._handoff.close()

    async def events(self) -> AsyncGenerator[SourceEvent, None]:
        """The subscription's events, in the order they arrived, until drained or lost for good."""
        name = self.ctx.name
        while (batch := await self._handoff.receive()) is not None:
            for message in batch:
                event = binding.to_event(name, message)
                if too_large(event):
                    self._too_large.inc()
                    self.ctx.logger.warning(
                        "Dropped a %d-byte message on %s: too large for one event.",
                        len(message.data),
                        message.subject,
                    )
                    continue
                yield event
        if self.connection.lost:
            raise SourceUnavailable(
                f"the connection to {self.connection.config.display_url} closed: {self.connection.problem}",
                source=name,
            )

    async def close(self) -> None:
        """Stop taking messages; the subscription itself goes with the connection."""
        self._handoff.close()
        if self._draining is not None:
            await tasks.stop(self._draining, timeout=1.0, logger=self.ctx.logger, reason="source stopped")
