"""Real brokers for tests: NATS, mosquitto (MQTT), RabbitMQ (AMQP) and Tansu (Kafka protocol).

Each is an async context manager yielding a started ``Broker`` (see ``brokers_base``)::

    async with mosquitto() as b:        # or nats_server(), rabbitmq(), tansu(), broker("mosquitto")
        b.port, b.url, b.log_path       # a free port on 127.0.0.1; the client's address; its log
        b.connections()                 # established client connections now, from /proc/net/tcp{,6}
        await b.stop()                  # an outage: the port closes, the data stays
        await b.start()                 # back on the same port, ready when it answers its protocol

=========  ====================  ==============================  ===============================
broker     ``url``               ready when                      kept across ``stop``/``start``
=========  ====================  ==============================  ===============================
nats       ``nats://h:p``        ``PING`` gets ``PONG``          the JetStream store
mosquitto  ``tcp://h:p``         ``CONNACK`` accepts             retained messages, sessions
rabbitmq   ``amqp://guest:...``  handshake to ``Channel.OpenOk``  durable queues, persistent msgs
tansu      ``h:p``               ``ApiVersions`` + ``Metadata``   nothing (memory-only)
=========  ====================  ==============================  ===============================

The process dies with the test run; its log is printed when the test fails. A missing binary skips
the test with the reason, or fails it under ``CI=true``. A RabbitMQ node takes about 9 s to boot:
``shared_rabbitmq()`` gives tests one node for the whole run, ``rabbitmq()`` a node of their own.
Wire-level clients for checks of a test's own live in ``brokers_wire`` (NATS, Kafka),
``brokers_mqtt`` and ``brokers_amqp``.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Literal

import pytest

from tests.harness import brokers_mosquitto, brokers_rabbitmq, brokers_tansu
from tests.harness.brokers_base import Broker, connection_count, require, running
from tests.harness.brokers_mosquitto import Mosquitto
from tests.harness.brokers_rabbitmq import RabbitMQ
from tests.harness.brokers_tansu import Tansu
from tests.harness.nats import NatsServer, nats_server
from tests.harness.processes import showing_log_on_failure

__all__ = [
    "Broker",
    "BrokerKind",
    "Mosquitto",
    "NatsServer",
    "RabbitMQ",
    "Tansu",
    "broker",
    "connection_count",
    "mosquitto",
    "nats_server",
    "rabbitmq",
    "shared_rabbitmq",
    "tansu",
]

BrokerKind = Literal["nats", "mosquitto", "rabbitmq", "tansu"]


@contextlib.asynccontextmanager
async def mosquitto() -> AsyncIterator[Mosquitto]:
    """A running mosquitto of the test's own (about 0.02 s to start)."""
    binary = require(brokers_mosquitto.mosquitto_binary(), brokers_mosquitto.MISSING)
    async with running(lambda workdir: Mosquitto(binary, workdir)) as server:
        yield server


@contextlib.asynccontextmanager
async def tansu() -> AsyncIterator[Tansu]:
    """A running Tansu of the test's own (about 0.02 s to start; memory-only, see ``Tansu``)."""
    binary = require(brokers_tansu.tansu_binary(), brokers_tansu.MISSING)
    async with running(lambda workdir: Tansu(binary, workdir)) as server:
        yield server


@contextlib.asynccontextmanager
async def rabbitmq() -> AsyncIterator[RabbitMQ]:
    """A RabbitMQ node of the test's own (about 9 s to boot, again on each ``start``), for outage tests."""
    binary = require(brokers_rabbitmq.rabbitmq_binary(), brokers_rabbitmq.MISSING)
    async with running(lambda workdir: RabbitMQ(binary, workdir)) as server:
        yield server


_shared: RabbitMQ | None = None
_shared_failure: str | None = None


def _close_shared() -> None:
    global _shared
    if _shared is not None:
        node, _shared = _shared, None
        node.close_now()
        shutil.rmtree(node.workdir, ignore_errors=True)


async def _shared_node() -> RabbitMQ:
    global _shared, _shared_failure
    if _shared_failure is not None:
        pytest.fail(f"the shared RabbitMQ node failed to boot earlier in this run: {_shared_failure}")
    if _shared is None:
        binary = require(brokers_rabbitmq.rabbitmq_binary(), brokers_rabbitmq.MISSING)
        node = RabbitMQ(binary, Path(tempfile.mkdtemp(prefix="broker-")))
        try:
            async with showing_log_on_failure(node.log_path, f"shared {node.name} :{node.port}"):
                await node.start()
        except Exception as error:
            _shared_failure = repr(error)
            node.close_now()
            shutil.rmtree(node.workdir, ignore_errors=True)
            raise
        _shared = node
        atexit.register(_close_shared)
    return _shared


@contextlib.asynccontextmanager
async def shared_rabbitmq() -> AsyncIterator[RabbitMQ]:
    """The test run's one RabbitMQ node: booted by the first test that asks, stopped when the run ends.

    Tests sharing it keep apart by queue (or vhost) names of their own. A test may ``stop`` it for an
    outage; leaving the block starts it again if it is down, so the next test finds it serving.
    """
    node = await _shared_node()
    try:
        async with showing_log_on_failure(node.log_path, f"shared {node.name} :{node.port}"):
            yield node
    finally:
        await node.start()


BROKERS: dict[BrokerKind, Callable[[], AbstractAsyncContextManager[Broker]]] = {
    "nats": nats_server,
    "mosquitto": mosquitto,
    "rabbitmq": rabbitmq,
    "tansu": tansu,
}


def broker(kind: BrokerKind) -> AbstractAsyncContextManager[Broker]:
    """A running broker of the test's own by name (``nats`` has JetStream on; ``rabbitmq`` is fresh)."""
    return BROKERS[kind]()
