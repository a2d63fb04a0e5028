"""A programmable HTTP subscriber and the helpers the delivery tests share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from common.client.delivery import DeliverySettings, Subscriber
from common.client.metrics import REGISTRY
from common.client.model import Format, Message, Receipt
from common.client.subscribers import parse_subscriber
from common.retry import Backoff
from tests.harness.processes import free_port

FAST = DeliverySettings(
    retry=Backoff(duration=0.01, factor=2.0, jitter=0.0, cap=0.05), request_timeout=2.0, stop_wait=0.2
)
"""Tiny backoffs so outages in these tests last milliseconds; a stopped lane waits 0.2 s for a
delivery under way."""


@dataclass(frozen=True)
class Arrival:
    event_id: str
    source: str
    at: float
    headers: dict[str, str]
    target: str = ""
    """The request's path and query, as the subscriber saw them."""


async def _ok(arrival: Arrival) -> web.Response:
    return web.Response(status=200)


class Sink:
    """An HTTP subscriber: records every request, answers with ``respond``, holds requests while
    ``gate`` is clear."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: list[Arrival] = []
        self.respond: Callable[[Arrival], Awaitable[web.Response]] = _ok
        self.gate = asyncio.Event()
        self.gate.set()
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def ids(self, source: str | None = None) -> list[str]:
        return [a.event_id for a in self.arrivals if source is None or a.source == source]

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.gate.set()
        await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Until ``count`` requests have arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.arrivals) >= count)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        arrival = Arrival(
            request.headers["ce-id"],
            request.headers["ce-source"],
            time.monotonic(),
            dict(request.headers),
            request.path_qs,
        )
        self.arrivals.append(arrival)
        async with self._changed:
            self._changed.notify_all()
        await self.gate.wait()
        return await self.respond(arrival)


@contextlib.asynccontextmanager
async def serving(port: int | None = None) -> AsyncIterator[Sink]:
    sink = Sink(port or free_port())
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@contextlib.asynccontextmanager
async def subscriber(
    url: str, settings: DeliverySettings = FAST, grace: float = 5.0
) -> AsyncIterator[Subscriber]:
    sub = Subscriber(parse_subscriber(url, Format.BINARY), settings, gateway="test-gateway")
    await sub.start()
    try:
        yield sub
    finally:
        await sub.close(grace)


def message(source: str, n: int, fmt: Format = Format.BINARY, receipt: Receipt | None = None) -> Message:
    event_id = f"{source}-{n}"
    headers = {"ce-id": event_id, "ce-source": source, "ce-specversion": "1.0", "ce-type": fmt.value}
    return Message(
        event_id,
        source,
        f'{{"n": {n}}}'.encode(),
        {**headers, "Content-Type": "application/json"},
        time.monotonic(),
        receipt,
    )


class Outcomes:
    """Receipts that record how each event ended: ``True`` acknowledged, ``False`` abandoned."""

    def __init__(self) -> None:
        self.done: dict[int, bool] = {}

    def receipt(self, n: int) -> Receipt:
        return Receipt(lambda acknowledge: self.done.__setitem__(n, acknowledge))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
