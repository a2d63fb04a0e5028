"""A real mosquitto (each test its own: it starts in about 0.02 s, persistence on) and an MQTT
gateway server in-process, over real gRPC."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.rpc import eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from gateways.mqtt import KIND
from tests.harness.brokers import Mosquitto, mosquitto

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

FAST_RETRY = "backoff: {duration: 100ms, factor: 2, jitter: 0, steps: 0}"
_ids = itertools.count()


@pytest.fixture
async def broker() -> AsyncIterator[Mosquitto]:
    async with mosquitto() as server:
        yield server


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    srv = GatewayServer(KIND, ServerSettings(port=0, grace_period=2.0))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[EventingAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield eventing_stub(channel)


def source_yaml(url: str, topic: str, *lines: str, client_id: str = "") -> str:
    """One MQTT source's config with a quick first-connect retry, then ``lines``."""
    client = client_id or f"gw-{next(_ids)}"
    return "\n".join([f"url: {url}", f"topic: '{topic}'", f"clientId: {client}", FAST_RETRY, *lines])


def publish(port: int, topic: str, *payloads: str, qos: int = 1, v5: bool = False) -> None:
    """Publish with a paho client of the test's own, each message confirmed by the broker."""
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{next(_ids)}", protocol=protocol)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload.encode(), qos=qos).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
