"""The whole client, end to end: a real gateway server, a config file, real HTTP and JetStream subscribers."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import nats

from common.client.app import ClientSettings, GatewayClient
from common.client.config_source import FileConfigSource
from common.client.delivery import DeliverySettings
from common.client.metrics import REGISTRY
from common.client.model import Format
from common.client.runner import DeliveryOptions, build_delivery, gateway_identity
from common.client.status import Phase, StatusBoard
from common.retry import Backoff
from common.server.app import GatewayServer
from tests.harness.configmaps import configmap
from tests.harness.http_sink import HttpSink
from tests.harness.nats import nats_server
from tests.harness.processes import free_port, spawn, terminate, wait_until
from tests.kinds import JOURNAL, TICK

FAST = DeliverySettings(retry=Backoff(duration=0.01, factor=2.0, jitter=0.0, cap=0.05), request_timeout=2.0)


@asynccontextmanager
async def running_client(
    server: str, config: Path, subscribers: tuple[str, ...], *, kind: str = "tick"
) -> AsyncIterator[GatewayClient]:
    gateway = gateway_identity(kind, "test-gateway")
    delivery = build_delivery(DeliveryOptions(subscribers, Format.BINARY, FAST), gateway, sys.stdout)
    settings = ClientSettings(server=server, ops_host="127.0.0.1", ops_port=0, grace_period=2.0)
    client = GatewayClient(settings, FileConfigSource(config, poll_interval=0.02), delivery)
    stop = asyncio.Event()
    task = asyncio.ensure_future(client.run(stop))
    try:
        await wait_until(lambda: client.ops_port != 0 or task.done(), what="client started")
        yield client
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def sequence(bodies: list[bytes], source: str) -> list[int]:
    return [int(b.decode().rsplit("-", 1)[1]) for b in bodies if b.decode().startswith(source + "-")]


def dropped(reason: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "gateway_events_dropped_total" and sample.labels.get("reason") == reason:
                total += sample.value
    return total


async def test_events_arrive_in_order_per_source_in_every_format(
    server: GatewayServer, sink: HttpSink, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(a="count: 30", b="count: 30"))
    subs = (f"{sink.url}/bin", f"{sink.url}/st?format=structured", f"{sink.url}/legacy?format=legacy")
    async with running_client(f"127.0.0.1:{server.port}", config, subs):
        await wait_until(
            lambda: all(len(sink.requests[p]) == 60 for p in ("/bin", "/st", "/legacy")), what="all"
        )
    for source in ("a", "b"):
        expected = [f"{source}-{i}".encode() for i in range(30)]
        assert sink.bodies("/bin", source) == expected
        structured = [json.loads(r.body) for r in sink.requests["/st"]]
        assert [base64.b64decode(e["data_base64"]) for e in structured if e["subject"] == source] == expected
        legacy = [json.loads(r.body) for r in sink.requests["/legacy"]]
        hosts = [e["context"]["source"]["host"] for e in legacy]
        assert [
            base64.b64decode(e["payload"])
            for e in legacy
            if e["context"]["source"]["host"].endswith(f":{source}")
        ] == expected
        assert f"test-gateway:{source}" in hosts
    first = sink.requests["/bin"][0].headers
    assert first["ce-source"] == "test-gateway"
    assert first["ce-type"] == "tick"
    assert first["ce-specversion"] == "1.0"
    assert first["ce-id"] in {"a:0", "b:0"}
    assert first["Content-Type"] == "text/plain"


async def test_jetstream_subscribers_get_each_event_once_in_order(
    server: GatewayServer, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(a="count: 25"))
    async with nats_server() as broker:
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["gw.>"])
        sub = f"jetstream://127.0.0.1:{broker.port}/gw.{{gateway}}.{{source}}"
        async with running_client(f"127.0.0.1:{server.port}", config, (sub,)):
            await wait_until(lambda: _stream_count(js, "EVENTS", 25), what="25 events stored in the stream")
        msgs = await js.pull_subscribe("gw.test-gateway.a", durable="check")
        got = await msgs.fetch(25, timeout=2)
        assert [m.data for m in got] == [f"a-{i}".encode() for i in range(25)]
        assert [m.headers["Nats-Msg-Id"] for m in got if m.headers] == [f"a:{i}" for i in range(25)]
        await nc.close()


async def _stream_count(js: Any, stream: str, count: int) -> bool:
    info = await js.stream_info(stream)
    return bool(info.state.messages == count)


async def test_editing_the_file_touches_exactly_the_sources_edited(
    server: GatewayServer, sink: HttpSink, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    endless = "count: 0\nevery: 0.005"
    config.write_text(configmap(keep=endless, edit=endless, gone=endless))
    async with running_client(f"127.0.0.1:{server.port}", config, (f"{sink.url}/e",)) as client:
        await wait_until(lambda: len(sink.bodies("/e", "gone")) >= 5, what="all three running")
        config.write_text(configmap(keep=endless, edit="count: 0\nevery: 0.004", fresh=endless))
        await wait_until(lambda: len(sink.bodies("/e", "fresh")) >= 5, what="the new source delivering")
        await client.status.wait_for(lambda b: "gone" not in b.nodes)
        kept = len(sink.bodies("/e", "keep"))
        await wait_until(lambda: len(sink.bodies("/e", "keep")) >= kept + 20, what="keep still delivering")
    keep = sequence(sink.bodies("/e", "keep"), "keep")
    assert keep == list(range(len(keep))), "the unchanged source never restarted and lost nothing"
    assert JOURNAL.started.count("keep") == 1
    assert JOURNAL.started.count("edit") == 2
    assert JOURNAL.started.count("fresh") == 1
    assert "gone" in JOURNAL.stopped


async def test_an_invalid_source_is_reported_and_the_others_deliver(
    server: GatewayServer, sink: HttpSink, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(good="count: 5", bad="end: explode"))
    async with running_client(f"127.0.0.1:{server.port}", config, (f"{sink.url}/v",)) as client:
        await wait_until(lambda: len(sink.bodies("/v", "good")) == 5, what="the valid source delivered")
        await client.status.wait_for(lambda b: "bad" in b.nodes and b.nodes["bad"].phase is Phase.ERROR)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{client.ops_port}/readyz") as resp:
                assert resp.status == 200, "one failed source does not take the client out of service"
                ready = await resp.json()
            async with http.get(f"http://127.0.0.1:{client.ops_port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{client.ops_port}/metrics") as resp:
                metrics = await resp.text()
    assert ready["nodes"]["bad"]["phase"] == "Error"
    assert "end:" in ready["nodes"]["bad"]["message"]
    assert ready["nodes"]["good"]["phase"] == "Completed"
    assert ready["nodes"]["good"]["events"] == 5
    assert 'gateway_events_received_total{source="good"} 5.0' in metrics
    assert "gateway_delivery_latency_seconds_bucket" in metrics


async def test_a_subscriber_down_for_a_while_receives_every_event_produced_meanwhile(
    server: GatewayServer, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(s="count: 40\nevery: 0.005"))
    sink = HttpSink(free_port())
    before = dropped("rejected") + dropped("shutdown")
    async with running_client(f"127.0.0.1:{server.port}", config, (f"{sink.url}/late",)) as client:
        await client.status.wait_for(lambda b: "s" in b.nodes and b.nodes["s"].phase is Phase.COMPLETED)
        assert sink.requests["/late"] == [], "the subscriber was down the whole time the source ran"
        await sink.start()
        await wait_until(lambda: len(sink.requests["/late"]) == 40, what="every event after the outage")
    await sink.stop()
    assert sequence(sink.bodies("/late", "s"), "s") == list(range(40))
    assert dropped("rejected") + dropped("shutdown") == before


async def test_a_permanent_4xx_is_counted_and_not_retried_forever(
    server: GatewayServer, sink: HttpSink, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(r="count: 7"))
    sink.status = 400
    before = dropped("rejected")
    async with running_client(f"127.0.0.1:{server.port}", config, (f"{sink.url}/no",)):
        await wait_until(lambda: dropped("rejected") == before + 7, what="seven rejections counted")
    assert len(sink.requests["/no"]) == 7, "each rejected event was sent once, not retried"


async def test_a_killed_server_is_reconnected_and_its_sources_resumed(sink: HttpSink, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(tick="interval: 50ms"))
    cmd = [sys.executable, "-m", "common.cli", "serve", "calendar", "--port", str(port)]
    server = await spawn(cmd, tmp_path / "server.log")
    try:
        async with running_client(f"127.0.0.1:{port}", config, (f"{sink.url}/k",), kind="calendar") as client:
            await wait_until(lambda: len(sink.requests["/k"]) >= 3, what="events before the kill")
            server.send_signal(signal.SIGKILL)
            await server.wait()
            await client.status.wait_for(lambda b: b.nodes["tick"].phase is Phase.ERROR)
            seen = len(sink.requests["/k"])
            server = await spawn(cmd, tmp_path / "server2.log")
            # The channel's return wakes the source at once, whatever is left of its restart delay.
            await wait_until(
                lambda: len(sink.requests["/k"]) >= seen + 3, what="events after the restart", timeout=30
            )
            assert client.status.nodes["tick"].phase is Phase.RUNNING
            assert client.status.nodes["tick"].restarts >= 1
    finally:
        await terminate(server)
    ids = [r.headers["ce-id"] for r in sink.requests["/k"]]
    assert len(ids) == len(set(ids)), "each slot delivered once"
    slots = [datetime.fromisoformat(i.removeprefix("tick:").replace("Z", "+00:00")) for i in ids]
    assert slots == sorted(slots), "slots in order across the restart"


async def test_the_client_is_ready_with_no_sources_once_the_server_is_reachable(
    server: GatewayServer, tmp_path: Path
) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap())
    async with running_client(f"127.0.0.1:{server.port}", config, ()) as client:
        await client.status.wait_for(lambda b: b.ready)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{client.ops_port}/readyz") as resp,
        ):
            assert resp.status == 200


async def test_the_client_is_not_ready_while_the_server_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap())
    async with running_client(f"127.0.0.1:{free_port()}", config, ()) as client:
        await client.status.wait_for(lambda b: b.config_loaded)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{client.ops_port}/readyz") as resp,
        ):
            assert resp.status == 503
            body = await resp.json()
    assert body["server"]["connected"] is False
    assert body["config"]["loaded"] is True


async def test_sources_that_clash_are_all_reported_and_none_started_until_the_file_is_fixed(
    server: GatewayServer, sink: HttpSink, tmp_path: Path
) -> None:
    from common.validate import precheck_for

    config = tmp_path / "cm.yaml"
    config.write_text(configmap(one="count: 3\nport: 12000", two="count: 3\nport: 12000", other="count: 3"))
    delivery = build_delivery(
        DeliveryOptions((f"{sink.url}/c",), Format.BINARY, FAST), gateway_identity("tick", "gw"), sys.stdout
    )
    settings = ClientSettings(server=f"127.0.0.1:{server.port}", ops_port=-1)
    client = GatewayClient(
        settings,
        FileConfigSource(config, poll_interval=0.02),
        delivery,
        precheck=precheck_for(TICK, frozenset()),
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(client.run(stop))
    try:
        await client.status.wait_for(lambda b: _in_error(b) == {"one", "two"})
        assert "'two'" in client.status.nodes["one"].message
        assert "'one'" in client.status.nodes["two"].message
        await wait_until(lambda: len(sink.bodies("/c", "other")) == 3, what="the source without a clash runs")
        assert "one" not in JOURNAL.started
        assert "two" not in JOURNAL.started
        config.write_text(
            configmap(one="count: 3\nport: 12000", two="count: 3\nport: 12001", other="count: 3")
        )
        await wait_until(
            lambda: len(sink.bodies("/c", "one")) == 3 and len(sink.bodies("/c", "two")) == 3,
            what="both start once the clash is gone",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _in_error(board: StatusBoard) -> set[str]:
    return {name for name, node in board.nodes.items() if node.phase is Phase.ERROR}
