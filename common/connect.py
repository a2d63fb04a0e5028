"""Connecting a broker source, the same for every kind: one attempt retried with the shared helper,
the source's state reported each way, a drain waking the wait.

Each failed attempt raises ``SourceUnavailable`` (its reason already reported with
``SourceContext.report_connection``); ``connect`` retries it with ``common.retry`` (numbered log lines,
the config's ``backoff``), and says the source serves once an attempt succeeds, or once one has failed
(the client then shows why, not "starting"). A drain ends the wait: ``connect`` returns None, and
the source, holding nothing yet, ends. Kinds whose library reconnects by itself (NATS, Kafka) call it
once; kinds that open again after a loss (AMQP, MQTT) call it in a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common.errors import SourceUnavailable
from common.kinds import SourceContext
from common.retry import Backoff, retry

T = TypeVar("T")


class _Drained(Exception):
    """The source was asked to finish before an attempt succeeded."""


async def connect(
    ctx: SourceContext,
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    drained: asyncio.Event,
) -> T | None:
    """``attempt``'s result once one succeeds (the source reported connected and serving), or None
    when the source is drained first."""

    async def once() -> T:
        if drained.is_set():
            raise _Drained()
        try:
            result = await attempt()
        except SourceUnavailable:
            ctx.serving()  # not serving, but the state is known: the client shows why, not "starting"
            raise
        ctx.report_connection(True)
        ctx.serving()
        return result

    try:
        return await retry(
            once, what=what, backoff=backoff, retry_on=(SourceUnavailable,), logger=ctx.logger, wakeup=drained
        )
    except _Drained:
        return None
