"""AMQP helpers for tests against a real RabbitMQ: source configs, the durable queue declared as the
gateway declares it, and publishers whose every message is confirmed by the broker.

A publisher here turns on publisher confirms, sends persistent messages with ``mandatory`` set (an
unroutable message is an error, not a silent confirm) and gives each a unique ``message_id``; an AMQP
event's id is ``<source>:<message_id>`` (``gateways.amqp.binding``), so a confirmed id names the event
it becomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import aio_pika
import aio_pika.abc

STEADY_RETRY = "backoff: {duration: 200ms, factor: 1, jitter: 0, steps: 0}"
"""A source retried every 200 ms: it reconnects soon after a broker comes back (a test waits for it)."""
PUBLISH_INTERVAL = 0.005
"""Seconds between two messages of a steady ``Publishing``: a few hundred a second."""


def durable_source(url: str, exchange: str, queue: str, routing_key: str, *lines: str) -> str:
    """A source's YAML: a topic exchange and a durable named queue, retried steadily, then ``lines``."""
    return "\n".join(
        [
            f"url: {url}",
            f"exchangeName: {exchange}",
            "exchangeType: topic",
            f"routingKey: '{routing_key}'",
            STEADY_RETRY,
            f"queueDeclare: {{name: {queue}}}",
            *lines,
        ]
    )


@contextlib.asynccontextmanager
async def channel(url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A connection of the test's own with one channel, publisher confirms on."""
    connection = await aio_pika.connect(url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def declare(
    chan: aio_pika.abc.AbstractChannel, exchange: str, queue: str, routing_key: str
) -> aio_pika.abc.AbstractExchange:
    """The topic exchange and the durable queue bound to it, as a ``durable_source`` declares them, so
    what is published before the gateway first connects waits in the queue."""
    declared = await chan.declare_exchange(exchange, "topic", durable=True)
    bound = await chan.declare_queue(queue, durable=True)
    await bound.bind(declared, routing_key)
    return declared


async def publish(
    exchange: aio_pika.abc.AbstractExchange, routing_key: str, bodies: Iterable[str], prefix: str
) -> list[str]:
    """Publish each body (persistent, ``message_id`` ``<prefix>-<n>``), each confirmed before the next;
    the message ids in order."""
    sent: list[str] = []
    for n, body in enumerate(bodies):
        message_id = f"{prefix}-{n}"
        message = aio_pika.Message(
            body.encode(), message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await exchange.publish(message, routing_key=routing_key, mandatory=True)
        sent.append(message_id)
    return sent


@dataclass
class Publishing:
    """Messages published to ``exchange`` with ``routing_key`` until the block ends: ``burst`` at once,
    then one every ``PUBLISH_INTERVAL``; ``confirmed`` holds each message id once the broker confirmed it."""

    exchange: aio_pika.abc.AbstractExchange
    routing_key: str
    burst: int = 0
    confirmed: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Publishing:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task

    async def until_confirmed(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.confirmed) < count:
                await asyncio.sleep(0.01)  # polling the publisher's tally: it sends no notification

    async def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            message = aio_pika.Message(
                f"order {n}".encode(), message_id=f"m-{n}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await self.exchange.publish(message, routing_key=self.routing_key, mandatory=True)
            self.confirmed.append(f"m-{n}")
            if n >= self.burst:
                await asyncio.sleep(PUBLISH_INTERVAL)  # the publisher's pace, not a wait for readiness
