"""The broker harness itself: each broker starts, answers its protocol, is counted, and restarts.

NATS, mosquitto and Tansu each start in a few hundredths of a second, so each test takes its own;
RabbitMQ boots in seconds, so every test here shares the run's one node (one boot, one restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import nats
import pytest

from tests.harness.brokers import (
    Broker,
    BrokerKind,
    Mosquitto,
    NatsServer,
    RabbitMQ,
    broker,
    connection_count,
    mosquitto,
    nats_server,
    shared_rabbitmq,
    tansu,
)
from tests.harness.brokers_amqp import amqp_connection
from tests.harness.brokers_base import require
from tests.harness.brokers_mqtt import mqtt_client
from tests.harness.brokers_wire import kafka_wire
from tests.harness.nats import nats_server_binary
from tests.harness.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
KINDS: list[BrokerKind] = ["nats", "mosquitto", "tansu", "rabbitmq"]
KIND_PARAMS = [pytest.param(k, marks=pytest.mark.slow) if k == "rabbitmq" else k for k in KINDS]


def started(kind: BrokerKind) -> AbstractAsyncContextManager[Broker]:
    """A broker of ``kind``: the shared node for RabbitMQ, a fresh one for the others."""
    return shared_rabbitmq() if kind == "rabbitmq" else broker(kind)


@contextlib.asynccontextmanager
async def a_client(b: Broker) -> AsyncIterator[None]:
    """One connection that has done its protocol's handshake, held open for the block."""
    if isinstance(b, NatsServer):
        nc = await nats.connect(b.url, allow_reconnect=False)
        try:
            yield
        finally:
            await nc.close()
    elif isinstance(b, Mosquitto):
        async with mqtt_client(b.port, "counted"):
            yield
    elif isinstance(b, RabbitMQ):
        async with amqp_connection(b.port):
            yield
    else:
        async with kafka_wire(b.port):
            yield


async def refused(port: int) -> bool:
    """True when nothing accepts connections on ``127.0.0.1:port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def assert_down(b: Broker) -> None:
    """After ``stop``: not running, its port closed, no connection left."""
    assert not b.running
    assert await refused(b.port)
    assert b.connections() == 0


@pytest.mark.parametrize("kind", KIND_PARAMS)
async def test_each_broker_starts_on_a_free_loopback_port_and_answers_its_own_protocol(
    kind: BrokerKind,
) -> None:
    async with started(kind) as b:
        assert b.running
        assert f"127.0.0.1:{b.port}" in b.url
        await b.probe()
        assert b.ready_seconds is not None and b.ready_seconds < b.ready_timeout
        assert b.log_path.is_file()


@pytest.mark.parametrize("kind", KIND_PARAMS)
async def test_each_broker_counts_a_client_connection_while_it_is_open_and_not_once_it_closes(
    kind: BrokerKind,
) -> None:
    async with started(kind) as b:
        before = b.connections()
        async with a_client(b):
            await wait_until(lambda: b.connections() == before + 1, what="the connection is counted")
        await wait_until(lambda: b.connections() == before, what="the closed connection is no longer counted")


async def test_nats_keeps_a_jetstream_stream_and_its_messages_across_stop_and_start() -> None:
    async with nats_server() as server:
        nc = await nats.connect(server.url, allow_reconnect=False)
        await nc.jetstream().add_stream(name="KEPT", subjects=["kept.>"])
        await nc.jetstream().publish("kept.a", b"before the outage")
        await nc.close()
        port = server.port
        await server.stop()
        await assert_down(server)
        await server.start()
        assert server.port == port
        nc = await nats.connect(server.url, allow_reconnect=False)
        try:
            stored = await nc.jetstream().get_msg("KEPT", 1)
        finally:
            await nc.close()
        assert stored.data == b"before the outage"


async def test_mosquitto_keeps_a_retained_message_across_stop_and_start() -> None:
    async with mosquitto() as server:
        async with mqtt_client(server.port, "publisher") as client:
            await client.publish("harness/kept", b"before the outage", qos=1, retain=True)
        port = server.port
        await server.stop()
        await assert_down(server)
        await server.start()
        assert server.port == port
        async with mqtt_client(server.port, "late-subscriber") as client:
            await client.subscribe("harness/#")
            async with asyncio.timeout(5):
                message = await client.next_message()
        assert (message.topic, message.payload, message.retain) == (
            "harness/kept",
            b"before the outage",
            True,
        )


@pytest.mark.slow
async def test_the_shared_rabbitmq_node_keeps_a_durable_queues_persistent_message_when_a_test_stops_it() -> (
    None
):
    async with shared_rabbitmq() as node:
        async with amqp_connection(node.port) as amqp:
            await amqp.declare_queue("harness.kept", durable=True)
            await amqp.confirm_select()
            await amqp.publish("harness.kept", b"before the outage", persistent=True)
        await node.stop()
        await assert_down(node)
    async with shared_rabbitmq() as again:  # leaving the block started it again, on the same port
        assert again is node and again.running
        async with amqp_connection(again.port) as amqp:
            assert await amqp.declare_queue("harness.kept", durable=True) == 1
            assert await amqp.get("harness.kept") == b"before the outage"
            assert await amqp.get("harness.kept") is None


async def test_tansu_comes_back_on_the_same_port_but_empty_as_it_keeps_topics_only_in_memory() -> None:
    async with tansu() as server:
        async with kafka_wire(server.port) as kafka:
            await kafka.create_topic("harness.gone", partitions=2)
            assert (await kafka.metadata()).topics == {"harness.gone": 2}
        port = server.port
        await server.stop()
        await assert_down(server)
        await server.start()
        assert server.port == port
        async with kafka_wire(server.port) as kafka:
            assert (await kafka.metadata()).topics == {}


async def test_connection_count_counts_established_ipv4_and_ipv6_connections_on_its_port_only() -> None:
    port, other = free_port(), free_port()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    servers = [
        await asyncio.start_server(hold, "127.0.0.1", port),
        await asyncio.start_server(hold, "::1", port),
        await asyncio.start_server(hold, "127.0.0.1", other),
    ]
    writers = []
    try:
        for host, to in (("127.0.0.1", port), ("::1", port), ("127.0.0.1", other)):
            writers.append((await asyncio.open_connection(host, to))[1])
        await wait_until(lambda: connection_count(port) == 2, what="one IPv4 and one IPv6 connection")
        assert connection_count(other) == 1
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        for server in servers:
            server.close()
            await server.wait_closed()
    await wait_until(lambda: connection_count(port) == 0, what="closed connections are not counted")


async def test_a_broker_that_exits_while_starting_fails_start_with_its_exit_code(tmp_path: Path) -> None:
    binary = require(nats_server_binary(), "no nats-server binary")
    server = NatsServer(binary, tmp_path, jetstream=False)
    with socket.socket() as taken:  # bound, not listening: nats-server cannot bind it, nothing answers
        taken.bind(("127.0.0.1", server.port))
        with pytest.raises(RuntimeError, match=r"nats-server exited with rc=\d+ before it was ready"):
            await server.start()
    assert not server.running
    assert "address already in use" in server.log_path.read_text()


async def test_a_failing_test_body_prints_the_brokers_log(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError, match="the test's own failure"):
        async with nats_server(jetstream=False):
            raise AssertionError("the test's own failure")
    assert "Server is ready" in capsys.readouterr().err


async def test_a_broker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    binary = require(nats_server_binary(), "no nats-server binary")
    code = (
        "import sys; from pathlib import Path; from tests.harness.brokers_base import launch;"
        "print(launch(sys.argv[2:], Path(sys.argv[1])).pid, flush=True); sys.stdin.read()"
    )
    harness = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        str(tmp_path / "nats.log"),
        str(binary),
        "-a",
        "127.0.0.1",
        "-p",
        str(free_port()),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert harness.stdout is not None
    broker_pid = int(await harness.stdout.readline())
    pidfd = os.pidfd_open(broker_pid)
    try:
        harness.send_signal(signal.SIGKILL)
        await harness.wait()
        exited = asyncio.Event()
        asyncio.get_running_loop().add_reader(pidfd, exited.set)
        try:
            async with asyncio.timeout(5):
                await exited.wait()
        finally:
            asyncio.get_running_loop().remove_reader(pidfd)
    finally:
        os.close(pidfd)
        if harness.stdin is not None:
            harness.stdin.close()


def test_a_missing_broker_binary_skips_the_test_but_fails_it_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no such broker"):
        require(None, "no such broker")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no such broker"):
        require(None, "no such broker")
    assert require(Path("/bin/sh"), "unused") == Path("/bin/sh")
