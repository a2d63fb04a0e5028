"""A real RabbitMQ node (shared by the run: it takes about 9 s to boot) and an AMQP gateway server
in-process, over real gRPC. Tests keep apart by exchange and queue names of their own; an outage test
takes a node of its own (``own_broker``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aio_pika
import aio_pika.abc
import grpc
import pytest

from common.rpc import eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from gateways.amqp import KIND
from tests.harness.brokers import RabbitMQ, rabbitmq, shared_rabbitmq

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

FAST_RETRY = "backoff: {duration: 100ms, factor: 2, jitter: 0, steps: 0}"
_names = itertools.count()


@pytest.fixture
async def broker() -> AsyncIterator[RabbitMQ]:
    async with shared_rabbitmq() as node:
        yield node


@pytest.fixture
async def own_broker() -> AsyncIterator[RabbitMQ]:
    async with rabbitmq() as node:
        yield node


@pytest.fixture
def names() -> tuple[str, str]:
    """An exchange and a queue name no other test uses."""
    n = next(_names)
    return f"ex-{n}", f"q-{n}"


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


def source_yaml(url: str, exchange: str, routing_key: str, *lines: str, kind: str = "topic") -> str:
    """One AMQP source's config with a quick first-connect retry, then ``lines``."""
    return "\n".join(
        [
            f"url: {url}",
            f"exchangeName: {exchange}",
            f"exchangeType: {kind}",
            f"routingKey: '{routing_key}'",
            FAST_RETRY,
            *lines,
        ]
    )


async def publisher(
    url: str, exchange: str, kind: str = "topic"
) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractExchange]:
    """A connection of the test's own and the exchange, declared as the gateway declares it."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    declared = await channel.declare_exchange(exchange, kind, durable=True)
    return connection, declared


async def publish(
    exchange: aio_pika.abc.AbstractExchange, routing_key: str, *bodies: str, **properties: object
) -> None:
    for body in bodies:
        await exchange.publish(
            aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),  # type: ignore[arg-type]
            routing_key=routing_key,
        )
