"""A real webhook gateway server in-process, sources started over real gRPC streams, and the full client.

``Gateway.start`` opens a StartEventSource stream as a client would and returns once the route
answers; each event read off the stream lands in ``Source.events``. Webhook ports come from
``free_port``. After every test the router is closed, so what a test leaves on purpose (routes
answering 503 after a shutdown) does not outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from common.client.app import ClientSettings, GatewayClient
from common.client.config_source import FileConfigSource
from common.client.delivery import DeliverySettings
from common.client.model import Format
from common.client.runner import DeliveryOptions, build_delivery, gateway_identity
from common.configmap import EventSourceSpec
from common.retry import Backoff
from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from gateways.webhook import KIND
from gateways.webhook import router as router_module
from gateways.webhook.router import ROUTER, Router
from tests.harness.processes import free_port, wait_until

EVENT_TIMEOUT = 5.0
"""Seconds an expected event may take to come off the stream (it takes milliseconds)."""


def source_yaml(port: int, endpoint: str = "/hook", method: str = "POST", **extra: Any) -> str:
    """One webhook source's config; ``extra`` fields are written as given (YAML flow values)."""
    lines = [f"endpoint: {endpoint}", f"method: {method}", f'port: "{port}"']
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


@dataclass
class Source:
    """One running source: its stream, and the events read off it."""

    name: str
    port: int
    endpoint: str
    method: str
    call: Any
    events: asyncio.Queue[eventing_pb2.Event] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.endpoint}"

    async def next_event(self, timeout: float = EVENT_TIMEOUT) -> eventing_pb2.Event:
        async with asyncio.timeout(timeout):
            return await self.events.get()


class Gateway:
    """A webhook gateway server and a gRPC stub to it."""

    def __init__(self, server: GatewayServer, stub: Any) -> None:
        self.server = server
        self.stub = stub
        self.sources: list[Source] = []

    async def start(self, name: str, data: str, *, read: bool = True) -> Source:
        """Start source ``name``; return once its route serves (``read=False``: nobody reads the stream)."""
        config = KIND.parse(data)
        call = self.stub.StartEventSource(EventSourceSpec(name, data).to_proto())
        source = Source(name, config.port, config.endpoint, config.method, call)
        if read:
            source.reader = asyncio.ensure_future(self._read(source))
        self.sources.append(source)
        await wait_until(
            lambda: _serving(config.port, config.endpoint, config.method) or call.done(),
            what=f"{name} serving {config.route}",
        )
        if call.done():
            raise AssertionError(f"source {name} ended at once: {await call.code()} {await call.details()}")
        return source

    @staticmethod
    async def _read(source: Source) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in source.call:
                source.events.put_nowait(event)

    async def stop(self, source: Source) -> None:
        """End the stream as a client does when a source is removed (a clean stop); return once its
        route has gone."""
        source.call.cancel()
        if source.reader is not None:
            await source.reader
        self.sources.remove(source)
        await wait_until(
            lambda: source.method not in ROUTER.lookup(source.port, source.endpoint),
            what=f"{source.name}'s route removed",
        )

    async def close(self) -> None:
        for source in list(self.sources):
            source.call.cancel()
            if source.reader is not None:
                await source.reader
        self.sources.clear()


def _serving(port: int, endpoint: str, method: str) -> bool:
    route = ROUTER.lookup(port, endpoint).get(method)
    return route is not None and route.available


@pytest.fixture(autouse=True)
async def router(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Router]:
    """The process's router, closed after the test.

    aiohttp drains an unread body after a refusal for the lingering time even when the caller has
    hung up (it does not notice the closed connection), so here it is short: the test's teardown
    need not wait for it.
    """
    monkeypatch.setattr(router_module, "LINGERING_TIME", 0.25)
    yield ROUTER
    await ROUTER.close()


@asynccontextmanager
async def running_gateway(**settings: Any) -> AsyncIterator[Gateway]:
    server = GatewayServer(KIND, ServerSettings(**{"port": 0, "grace_period": 1.0, **settings}))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    gateway = Gateway(server, eventing_stub(channel))
    try:
        yield gateway
    finally:
        await server.stop()  # first, as a real shutdown: streams end with UNAVAILABLE, readers see it
        await gateway.close()
        await channel.close()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with running_gateway() as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def port() -> int:
    return free_port()


FAST = DeliverySettings(retry=Backoff(duration=0.01, factor=2.0, jitter=0.0, cap=0.05), request_timeout=2.0)


@asynccontextmanager
async def running_client(
    server: str, config: Path, subscribers: tuple[str, ...]
) -> AsyncIterator[GatewayClient]:
    """The whole gateway client against ``server``, watching ``config``, delivering to ``subscribers``."""
    gateway = gateway_identity("webhook", "webhook-gateway")
    delivery = build_delivery(DeliveryOptions(subscribers, Format.BINARY, FAST), gateway, sys.stdout)
    settings = ClientSettings(server=server, ops_host="127.0.0.1", ops_port=-1, grace_period=2.0)
    client = GatewayClient(settings, FileConfigSource(config, poll_interval=0.02), delivery)
    stop = asyncio.Event()
    task = asyncio.ensure_future(client.run(stop))
    try:
        yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
