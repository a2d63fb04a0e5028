"""Routes follow the client's config file live: an added source answers, a removed one is 404, and a port
closes when its last route goes. The whole client, a real server, a real HTTP subscriber."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateways.webhook.router import ROUTER
from tests.harness.configmaps import configmap
from tests.harness.http_sink import HttpSink
from tests.harness.processes import free_port, wait_until
from tests.webhook.conftest import running_client, running_gateway, source_yaml


def serving(port: int, path: str) -> bool:
    route = ROUTER.lookup(port, path).get("POST")
    return route is not None and route.available


async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with http.post(url, data=body) as resp:
        return resp.status


async def test_editing_the_config_file_adds_and_removes_routes_and_closes_an_emptied_port(
    sink: HttpSink, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    one, two = free_port(), free_port()
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(a=source_yaml(one, "/a"), b=source_yaml(two, "/b")))
    subscriber = (f"{sink.url}/events",)

    async with (
        running_gateway() as gateway,
        running_client(f"127.0.0.1:{gateway.server.port}", config, subscriber),
    ):
        await wait_until(lambda: serving(one, "/a") and serving(two, "/b"), what="both routes served")
        assert await post(http, f"http://127.0.0.1:{one}/a", b"to-a") == 200
        assert await post(http, f"http://127.0.0.1:{one}/c", b"nothing") == 404

        config.write_text(
            configmap(a=source_yaml(one, "/a"), b=source_yaml(two, "/b"), c=source_yaml(one, "/c"))
        )
        await wait_until(lambda: serving(one, "/c"), what="the added route served")
        assert await post(http, f"http://127.0.0.1:{one}/c", b"to-c") == 200

        config.write_text(configmap(b=source_yaml(two, "/b"), c=source_yaml(one, "/c")))
        await wait_until(lambda: not ROUTER.lookup(one, "/a"), what="the removed route gone")
        assert await post(http, f"http://127.0.0.1:{one}/a", b"too-late") == 404
        assert await post(http, f"http://127.0.0.1:{one}/c", b"still-c") == 200

        config.write_text(configmap(b=source_yaml(two, "/b")))
        await wait_until(lambda: one not in ROUTER.ports, what="port one closed with its last route")
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(http, f"http://127.0.0.1:{one}/c", b"closed")
        assert await post(http, f"http://127.0.0.1:{two}/b", b"to-b") == 200

        await wait_until(
            lambda: len(sink.requests["/events"]) == 4, what="the four accepted events delivered"
        )

    assert sink.bodies("/events", "a") == [b"to-a"]
    assert sink.bodies("/events", "c") == [b"to-c", b"still-c"]
    assert sink.bodies("/events", "b") == [b"to-b"]


async def test_a_changed_source_serves_its_new_route_and_drops_its_old_one(
    sink: HttpSink, tmp_path: Path, http: aiohttp.ClientSession, port: int
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(hook=source_yaml(port, "/v1")))

    async with (
        running_gateway() as gateway,
        running_client(f"127.0.0.1:{gateway.server.port}", config, (sink.url,)),
    ):
        await wait_until(lambda: serving(port, "/v1"), what="v1 served")
        config.write_text(configmap(hook=source_yaml(port, "/v2")))
        await wait_until(
            lambda: serving(port, "/v2") and not ROUTER.lookup(port, "/v1"), what="v2 instead of v1"
        )

        assert await post(http, f"http://127.0.0.1:{port}/v1", b"old") == 404
        assert await post(http, f"http://127.0.0.1:{port}/v2", b"new") == 200
        await wait_until(lambda: len(sink.requests["/"]) == 1, what="the event delivered")

    assert sink.bodies("/", "hook") == [b"new"]


async def test_a_source_on_a_port_something_else_holds_is_retried_until_the_port_is_free(
    sink: HttpSink, tmp_path: Path, http: aiohttp.ClientSession, port: int
) -> None:
    squatter = HttpSink(port)
    await squatter.start()
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(hook=source_yaml(port, "/late")))

    async with (
        running_gateway() as gateway,
        running_client(f"127.0.0.1:{gateway.server.port}", config, (sink.url,)) as client,
    ):
        await client.status.wait_for(
            lambda b: "hook" in b.nodes and "cannot listen on port" in b.nodes["hook"].message
        )
        await squatter.stop()
        await wait_until(lambda: serving(port, "/late"), what="the source bound the freed port")
        assert await post(http, f"http://127.0.0.1:{port}/late", b"finally") == 200
        await wait_until(lambda: len(sink.requests["/"]) == 1, what="the event delivered")
