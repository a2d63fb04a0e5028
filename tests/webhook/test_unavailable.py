"""Never a 200 for an event that went nowhere: 503 with Retry-After while a source's stream is broken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from gateways.webhook.config import parse
from gateways.webhook.router import Router
from tests.harness.processes import wait_until
from tests.webhook.conftest import running_gateway, source_yaml

BIG = b"x" * (256 * 1024)
"""Bodies this size fill gRPC's flow-control window within a handful of events."""


async def test_with_nobody_reading_the_stream_callers_wait_and_a_shutdown_answers_them_503_not_200(
    http: aiohttp.ClientSession, port: int
) -> None:
    async with running_gateway(stream_buffer=2, grace_period=0.5) as gateway:
        source = await gateway.start("hook", source_yaml(port, "/x"), read=False)

        async def call() -> int:
            async with http.post(source.url, data=BIG) as resp:
                return resp.status

        calls = [asyncio.ensure_future(call()) for _ in range(40)]
        # What gRPC takes into its stream is answered within milliseconds; the rest wait for good.
        _, waiting = await asyncio.wait(calls, timeout=0.5)
        assert waiting, "with nobody reading, the stream fills and callers wait for the hand-off"

        await gateway.server.stop()
        async with asyncio.timeout(5):
            statuses = await asyncio.gather(*calls)
            on_stream = [event async for event in _drain(source.call)]

    assert set(statuses) == {200, 503}
    assert statuses.count(200) == len(on_stream), "a 200 for exactly the events that are on the stream"
    assert all(event.payload == BIG for event in on_stream)


async def _drain(call: Any) -> AsyncIterator[Any]:
    """What the stream holds, then its end (UNAVAILABLE: the server stopped)."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for event in call:
            yield event


async def test_after_a_server_shutdown_the_route_answers_503_with_retry_after_until_the_grace_ends(
    http: aiohttp.ClientSession, port: int, router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router, "grace", 0.5)
    async with running_gateway() as gateway:
        source = await gateway.start("hook", source_yaml(port, "/x"))
        # The shutdown's first stage ends every source; the ports close only when the server has stopped.
        gateway.server.servicer.shutdown()
        await gateway.server.servicer.wait_idle()

        async with http.post(source.url, data=b"late") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"

        await wait_until(lambda: router.ports == [], what="the grace period ended and the port closed")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(source.url, data=b"later"):
            pass


async def test_a_client_that_removes_a_source_gets_404_at_once_not_503(
    http: aiohttp.ClientSession, port: int
) -> None:
    async with running_gateway() as gateway:
        keep = await gateway.start("keep", source_yaml(port, "/keep"))
        gone = await gateway.start("gone", source_yaml(port, "/gone"))
        await gateway.stop(gone)

        async with http.post(gone.url, data=b"x") as resp:
            assert resp.status == 404
        async with http.post(keep.url, data=b"y") as resp:
            assert resp.status == 200
        assert (await keep.next_event()).payload == b"y"


async def test_a_source_that_starts_again_takes_its_unavailable_route_back(router: Router, port: int) -> None:
    config = parse(source_yaml(port, "/x"))
    log = logging.getLogger("test")
    route = await router.register("hook", config, log)

    router.release(route, "shutdown")
    assert not router.lookup(port, "/x")["POST"].available

    again = await router.register("hook", config, log)
    assert router.lookup(port, "/x")["POST"] is again
    assert again.available
    assert route.expiry is None, "the old route's expiry no longer applies"
    router.release(again, "cancelled")
    await wait_until(lambda: router.ports == [], what="the port closed")


async def test_a_failed_source_leaves_its_route_unavailable_not_gone(router: Router, port: int) -> None:
    route = await router.register("hook", parse(source_yaml(port, "/x")), logging.getLogger("test"))

    router.release(route, "")

    assert router.lookup(port, "/x")["POST"] is route
    assert not route.available
    assert route.channel.closed


async def test_a_stopped_server_closes_its_webhook_ports(
    http: aiohttp.ClientSession, port: int, router: Router
) -> None:
    async with running_gateway() as gateway:
        source = await gateway.start("hook", source_yaml(port, "/x"))
        await gateway.server.stop()
        assert router.ports == []
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(source.url, data=b"after the stop"):
                pass
