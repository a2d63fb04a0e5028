"""The Kafka source: start the consumer (retried with the shared helper), yield events, commit, close.

Starting is one attempt, retried with ``common.retry`` and the config's ``backoff`` (forever by
default, the delay capped at 60 s): brokers down at start, a partition that does not exist, a login
refused, each a numbered log line and the reason in the source's status. Once started, aiokafka
reconnects by itself and the probe (``connection``) reports the brokers' state. Drained, the source
fetches nothing new, yields what it holds and, for a group, waits until each of those has settled;
stopped or drained, it commits what settled, leaves its group and closes its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from common.connect import connect
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.kafka.config import KafkaConfig
from gateways.kafka.connection import Connection
from gateways.kafka.reader import Reader


async def run(ctx: SourceContext, config: KafkaConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s topic until drained or cancelled."""
    connection = Connection(ctx, config)
    reader = Reader(ctx, config)
    drained = asyncio.Event()

    def drain() -> None:
        drained.set()
        reader.drain()

    ctx.on_drain(drain)

    what = f"starting a consumer of {config.topic!r} on {connection.display}"
    try:
        consumer = await connect(
            ctx, lambda: connection.open(reader.commits), what=what, backoff=config.backoff, drained=drained
        )
        if consumer is None:
            return
        mode = (
            f"group {config.group.name!r}"
            if config.group
            else f"partition {config.partition} from the newest"
        )
        ctx.logger.info("Reading topic %r (%s) on %s.", config.topic, mode, connection.display)
        try:
            async with contextlib.aclosing(reader.events(consumer)) as events:
                async for event in events:
                    yield event
        finally:
            await reader.close()
    finally:
        await connection.close()
