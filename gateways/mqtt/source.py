"""The MQTT source: connect and subscribe (retried with the shared helper), yield events, connect
again after a loss, close.

Opening is one attempt, retried with ``common.retry`` and the config's ``backoff`` (forever by
default, capped at 60 s), at the start and after every loss: each failure a numbered log line and the
reason in the source's status, the stream open meanwhile. After a loss, QoS 1/2 messages delivered
and not acknowledged are the broker's to send again: under a persistent session it does, on the next
connection (``dup``); events of them still on their way are delivered, and their acknowledgements,
which no connection can take any more, are dropped. Drained, the source takes nothing new, yields what
it holds and waits for those acknowledgements; stopped or drained, it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from common.connect import connect
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.mqtt import metrics
from gateways.mqtt.config import MqttConfig
from gateways.mqtt.connection import Connection
from gateways.mqtt.reader import Reader


async def run(ctx: SourceContext, config: MqttConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s subscription until drained or cancelled."""
    reader = Reader(ctx)
    connection = Connection(ctx, config, reader.deliver)
    connection.listeners.append(reader.signal.set)
    drained = asyncio.Event()
    reconnects = metrics.RECONNECTS.labels(source=ctx.name)

    def drain() -> None:
        drained.set()
        reader.drain()

    ctx.on_drain(drain)

    async def attempt() -> bool:
        reader.new_connection(connection.ack)
        return await connection.open()

    what = f"subscribing to {config.topic!r} on {config.display_url}"
    try:
        opened = 0
        while not drained.is_set():
            present = await connect(ctx, attempt, what=what, backoff=config.backoff, drained=drained)
            if present is None:
                return
            if opened:
                reconnects.inc()
            opened += 1
            session = "resumed" if present else "new"
            ctx.logger.info("Subscribed to %r at QoS %d (%s session).", config.topic, config.qos, session)
            async with contextlib.aclosing(reader.events(connection.lost)) as events:
                async for event in events:
                    yield event
            if connection.lost.is_set():
                ctx.report_connection(False, connection.reason)
                await connection.close()
    finally:
        reader.acks.close()
        await connection.close()
