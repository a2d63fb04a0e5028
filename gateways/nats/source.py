"""The NATS source: connect and subscribe (retried with the shared helper), yield events, close.

Connecting and subscribing are one attempt, retried with ``common.retry`` and the config's
``backoff`` (forever by default, the delay capped at 60 s): a server that is down at start, a
JetStream stream not created yet, a credentials file not mounted yet, each a numbered log line and
the reason in the source's status. Once up, a dropped connection is re-established by nats-py
(see ``connection``). Drained, the source takes nothing new, yields what it holds and, for
JetStream, waits until each of those is acknowledged; stopped or drained, it closes its
subscription and its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from common.connect import connect
from common.errors import SourceUnavailable
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.nats.config import NatsConfig
from gateways.nats.connection import Connection
from gateways.nats.core import CoreReader
from gateways.nats.jetstream import JetStreamReader

Reader = CoreReader | JetStreamReader


async def run(ctx: SourceContext, config: NatsConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s subscription until drained or cancelled."""
    connection = Connection(ctx, config)
    drained = asyncio.Event()
    readers: list[Reader] = []

    def drain() -> None:
        drained.set()
        for reader in readers:
            reader.drain()

    ctx.on_drain(drain)

    async def attempt() -> Reader:
        await connection.open()
        reader: Reader = JetStreamReader(connection) if config.jetstream else CoreReader(connection)
        try:
            await reader.subscribe()
        except BaseException as exc:
            if isinstance(exc, SourceUnavailable):
                ctx.report_connection(False, str(exc))  # connected, but reading nothing: say why
            await reader.close()
            await connection.close()
            raise
        return reader

    try:
        what = f"connecting to {config.display_url} and subscribing to {config.subject!r}"
        found = await connect(ctx, attempt, what=what, backoff=config.backoff, drained=drained)
        if found is None:
            return
        reader = found
        readers.append(reader)
        if drained.is_set():
            reader.drain()
        try:
            async with contextlib.aclosing(reader.events()) as events:
                async for event in events:
                    yield event
        finally:
            await reader.close()
    finally:
        await connection.close()
