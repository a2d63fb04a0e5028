"""The webhook source: serve its route, yield one event per accepted request, give the route back.

Each request's handler waits until its event has been written to the gRPC stream (the event's
``written`` future) before answering 200. Events the source took but never yielded are failed here
when it stops, so their callers get 503; events it yielded are the server base's to settle.

Drained (the client or the server is stopping the source), the route takes nothing new (503 with
``Retry-After``), the events already on its channel are still yielded, and the source returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator

from common.errors import SourceFailed, SourceUnavailable
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.webhook import router
from gateways.webhook.config import WebhookConfig
from gateways.webhook.route import fail_unwritten


async def run(ctx: SourceContext, config: WebhookConfig) -> AsyncGenerator[SourceEvent, None]:
    """Yield the events of ``config``'s route until cancelled."""
    if config.answer == "delivered" and not ctx.acknowledges:
        raise SourceFailed(
            "answer: delivered needs a gateway client that acknowledges deliveries (StreamEventSource); "
            "this one does not (a v0.11 client), so no caller could be told the truth: use answer: written",
            source=ctx.name,
        )
    route = await router.ROUTER.register(ctx.name, config, ctx.logger)
    ctx.serving()
    ctx.on_drain(route.stop_taking)
    pending: deque[SourceEvent] = deque()
    try:
        while (batch := await route.channel.receive()) is not None:
            pending.extend(batch)
            while pending:
                yield pending.popleft()
        if ctx.end.value:
            return  # drained: every event taken has been yielded
        raise SourceUnavailable(f"the webhook server of port {config.port} was closed", source=ctx.name)
    finally:
        router.ROUTER.release(route, ctx.end.value)
        fail_unwritten(list(pending))
