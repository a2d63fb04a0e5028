"""The AMQP source: open (retried with the shared helper), yield events, re-open after a loss, close.

Opening (connect, channel, declare, bind, consume) is one attempt, retried with ``common.retry`` and
the config's ``backoff`` (forever by default, the delay capped at 60 s), at the start and again after
every loss of the connection or channel: each failure a numbered log line and the reason in the
source's status, the stream open meanwhile. What the lost channel had delivered and not been acked is
the broker's to deliver again (``redelivered``); events of it still on their way are delivered, and
their acks, which no channel can take any more, are dropped. Drained, the source takes nothing new,
yields what it holds and waits for those acks; stopped or drained, it closes channel and connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from common.connect import connect
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.amqp import metrics
from gateways.amqp.config import AmqpConfig
from gateways.amqp.connection import Connection
from gateways.amqp.reader import Reader


async def run(ctx: SourceContext, config: AmqpConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s queue until drained or cancelled."""
    connection = Connection(ctx, config)
    reader = Reader(ctx, config)
    drained = asyncio.Event()
    connection.listeners.append(reader.signal.set)
    reconnects = metrics.RECONNECTS.labels(source=ctx.name)

    def drain() -> None:
        drained.set()
        reader.drain()

    ctx.on_drain(drain)

    async def attempt() -> str:
        await reader.new_channel()  # before consuming: the first messages come as soon as it does
        return await connection.open(reader.deliver)

    what = f"consuming from {config.exchange_name!r} ({config.routing_key!r}) on {config.display_url}"
    try:
        opened = 0
        while not drained.is_set():
            queue = await connect(ctx, attempt, what=what, backoff=config.backoff, drained=drained)
            if queue is None:
                return
            if opened:
                reconnects.inc()
            opened += 1
            ctx.logger.info("Consuming from queue %r on %s.", queue, config.display_url)
            async with contextlib.aclosing(reader.events(connection.lost)) as events:
                async for event in events:
                    yield event
            if connection.lost.is_set():
                ctx.report_connection(False, connection.reason)
                await reader.acks.close()
                await connection.close()
    finally:
        try:
            await reader.acks.close()
        finally:
            await connection.close()
