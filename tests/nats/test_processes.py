"""The NATS gateway as real processes against a real nats-server: ``gateway serve nats`` beside
``gateway client`` (a pod) delivering to an HTTP subscriber, and a bare v0.11 StartEventSource call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nats
import pytest

from common.rpc import eventing_stub
from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.http_sink import HttpSink
from tests.harness.processes import wait_until
from tests.nats.conftest import Broker, source_yaml, spec

pytestmark = pytest.mark.slow

OUTAGE = 10.0
"""Seconds the broker stays down: several of nats-py's reconnect attempts, 2 s apart."""


async def readyz(gateway: Gateway) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gateway.ops_port}/readyz") as answer,
    ):
        found: dict[str, Any] = await answer.json()
        return found


async def status_says(gateway: Gateway, source: str, part: str) -> bool:
    """Whether the client's ``/readyz`` node of ``source`` has ``part`` in its message."""
    node = (await readyz(gateway))["nodes"].get(source, {})
    return part in str(node.get("message", ""))


async def test_a_pod_delivers_every_jetstream_message_in_order_across_a_broker_outage(
    tmp_path: Path, broker: Broker, sink: HttpSink
) -> None:
    publisher = await nats.connect(broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = publisher.jetstream()
    await js.add_stream(name="ORDERS", subjects=["orders.>"])
    config = tmp_path / "cm.yaml"
    data = source_yaml(broker.url, "orders.>", "jetStream: {stream: ORDERS, ackWait: 5s}")
    config.write_text(configmap(orders=data))
    gateway = Gateway(tmp_path, config, [f"{sink.url}/events"], kind="nats")
    try:
        await gateway.start()
        for n in range(20):
            await js.publish(f"orders.n{n}", f"order {n}".encode())
        await wait_until(lambda: len(sink.bodies("/events", "orders")) == 20, what="the first 20")
        await broker.stop()
        await wait_until(
            lambda: status_says(gateway, "orders", "disconnected, stream open"),
            what="the client's status shows the source disconnected",
        )
        await asyncio.sleep(OUTAGE)  # the outage itself: the gateway must ride it out, not be restarted
        await broker.start()
        await wait_until(
            lambda: status_says(gateway, "orders", "reconnected 1 time(s)"),
            what="the client's status shows the source back",
            timeout=20,
        )
        for n in range(20, 40):
            await js.publish(f"orders.n{n}", f"order {n}".encode())
        await wait_until(lambda: len(sink.bodies("/events", "orders")) >= 40, what="all 40")
        requests = [r for r in sink.requests["/events"] if r.headers.get("ce-subject") == "orders"]
        assert [r.body for r in requests] == [f"order {n}".encode() for n in range(40)]
        assert [r.headers["ce-id"] for r in requests] == [f"orders:ORDERS:{n}" for n in range(1, 41)]
        assert requests[0].headers["ce-eventsubject"] == "orders.n0"
        assert gateway.server is not None and gateway.server.proc is not None
        assert gateway.server.proc.returncode is None, "the same server process throughout"
        info = await js.consumer_info("ORDERS", "orders")
        await wait_until(lambda: _pending_is(js, 0), what="every message acked once delivered", timeout=10)
        assert info.num_redelivered == 0
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()
        await publisher.close()


async def _pending_is(js: Any, count: int) -> bool:
    info = await js.consumer_info("ORDERS", "orders")
    return bool(info.num_ack_pending == count)


async def test_a_v0_11_client_streams_from_gateway_serve_nats(tmp_path: Path, broker: Broker) -> None:
    gateway = Gateway(tmp_path, tmp_path / "unused.yaml", [], kind="nats")
    try:
        await gateway.start_server()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            call = eventing_stub(channel).StartEventSource(spec("legacy", source_yaml(broker.url, "legacy")))
            await broker.subscribed("legacy", "legacy")
            publisher = await nats.connect(broker.url)
            for n in range(3):
                await publisher.publish("legacy", f"v0.11 {n}".encode())
            await publisher.close()
            payloads: list[bytes] = []
            async with asyncio.timeout(10):
                async for event in call:
                    payloads.append(event.payload)
                    if len(payloads) == 3:
                        break
            call.cancel()
        assert payloads == [f"v0.11 {n}".encode() for n in range(3)]
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()
