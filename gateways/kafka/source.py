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

from aiokafka import AIOKafkaConsumer

from common.errors import SourceUnavailable
from common.events import SourceEvent
from common.kinds import SourceContext
from common.retry import retry
from gateways.kafka.config import KafkaConfig
from gateways.kafka.connection import Connection
from gateways.kafka.reader import Reader


class _Drained(Exception):
    """The source was asked to finish before it started: it holds nothing, so it just ends."""


async def run(ctx: SourceContext, config: KafkaConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s topic until drained or cancelled."""
    connection = Connection(ctx, config)
    reader = Reader(ctx, config)
    drained = asyncio.Event()

    def drain() -> None:
        drained.set()
        reader.drain()

    ctx.on_drain(drain)

    async def attempt() -> AIOKafkaConsumer:
        if drained.is_set():
            raise _Drained()
        try:
            consumer = await connection.open(reader.commits)
        except SourceUnavailable:
            ctx.serving()  # not serving, but the state is known: the client shows why, not "starting"
            raise
        ctx.report_connection(True)
        ctx.serving()
        return consumer

    what = f"starting a consumer of {config.topic!r} on {connection.display}"
    try:
        try:
            consumer = await retry(
                attempt,
                what=what,
                backoff=config.backoff,
                retry_on=(SourceUnavailable,),
                logger=ctx.logger,
                wakeup=drained,
            )
        except _Drained:
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
