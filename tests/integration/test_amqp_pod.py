"""The AMQP gateway as real processes against a real RabbitMQ: ``gateway serve amqp`` beside ``gateway
client`` (a pod), ``gateway run amqp`` (standalone), ``gateway validate amqp``, and a client that
speaks only the v0.11 proto, each delivering to (or reading as) a subscriber.

Most tests share the run's RabbitMQ node, each with an exchange and a queue of its own; the outage
test stops and starts a node of its own, whose durable queue and persistent messages survive.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.harness import v011_client
from tests.harness.amqp import STEADY_RETRY, channel, declare, durable_source, publish
from tests.harness.brokers import RabbitMQ, rabbitmq, shared_rabbitmq
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.http_sink import HttpSink, Request
from tests.harness.kafka import node, phase_is
from tests.harness.processes import free_port, run_to_end, wait_until

pytestmark = pytest.mark.slow

OUTAGE = 10.0
"""Seconds the broker stays down: many of the source's 200 ms attempts to open its connection again."""
PATH = "/events"
DELIVERY_WORK = 0.05
RATE_LIMIT, RATE_PERIODS, RATE_BACKLOG = 20, 10, 500


def _requests(sink: HttpSink, source: str) -> list[Request]:
    return [r for r in sink.requests[PATH] if r.headers.get("ce-subject") == source]


def ids(sink: HttpSink, source: str) -> list[str]:
    """The message ids ``source`` delivered (its event ids without the ``<source>:``), in arrival order."""
    return [r.headers["ce-id"].removeprefix(f"{source}:") for r in _requests(sink, source)]


def first_arrivals(sink: HttpSink, source: str) -> list[str]:
    """``ids`` with each repeat left out: the order in which messages first arrived."""
    return list(dict.fromkeys(ids(sink, source)))


async def delivered(sink: HttpSink, source: str, count: int, what: str, timeout: float = 20) -> None:
    await wait_until(lambda: len(_requests(sink, source)) >= count, what=what, timeout=timeout)


def pod(tmp_path: Path, sink: HttpSink, **sources: str) -> Gateway:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(**sources))
    return Gateway(tmp_path, config, [f"{sink.url}{PATH}"], kind="amqp")


class SlowSink(HttpSink):
    """An HTTP subscriber that takes ``DELIVERY_WORK`` seconds to answer each event it records."""

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        await asyncio.sleep(DELIVERY_WORK)  # the subscriber's own work, so deliveries are under way
        return response


class TimedSink(HttpSink):
    """An HTTP subscriber that also notes when (``time.monotonic()``) each event arrived."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.arrived: list[float] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.append(time.monotonic())
        return await super()._handle(request)


@pytest.fixture
async def slow_sink() -> AsyncIterator[SlowSink]:
    sink = SlowSink(free_port())
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def broker() -> AsyncIterator[RabbitMQ]:
    async with shared_rabbitmq() as node:
        yield node


@pytest.mark.timeout(150)
async def test_a_pod_delivers_in_order_and_resumes_after_a_broker_outage_unrestarted(
    tmp_path: Path, slow_sink: SlowSink
) -> None:
    sink = slow_sink
    async with rabbitmq() as broker:
        async with channel(broker.url) as chan:
            exchange = await declare(chan, "orders", "orders", "orders.#")
            before = await publish(exchange, "orders.eu", (f"before {n}" for n in range(30)), "before")
        gateway = pod(tmp_path, sink, orders=durable_source(broker.url, "orders", "orders", "orders.#"))
        try:
            await gateway.start()
            # The broker goes while messages are still being delivered: they settle during the outage,
            # so their acks cannot reach the broker, which delivers them again, flagged, once it is back.
            await delivered(sink, "orders", 10, "the first 10 messages published before the outage")
            await broker.stop()
            await wait_until(
                lambda: phase_is(gateway, "orders", "Error", "disconnected, stream open"),
                what="the client's status shows the source in Error",
            )
            await delivered(sink, "orders", 30, "the rest, read before the outage, delivered during it")
            await asyncio.sleep(OUTAGE)  # the outage itself: the gateway must ride it out, not be restarted
            assert await phase_is(gateway, "orders", "Error", "disconnected, stream open")
            await broker.start()
            await wait_until(
                lambda: phase_is(gateway, "orders", "Running", "reconnected"),
                what="the client's status shows the source Running again",
                timeout=20,
            )
            async with channel(broker.url) as chan:
                exchange = await declare(chan, "orders", "orders", "orders.#")
                after = await publish(exchange, "orders.eu", (f"after {n}" for n in range(30)), "after")
            await wait_until(
                lambda: len(first_arrivals(sink, "orders")) >= 60,
                what="the 30 messages published after the outage",
                timeout=30,
            )
            assert first_arrivals(sink, "orders") == before + after
            flags = Counter(
                (r.headers["ce-id"], r.headers["ce-redelivered"]) for r in _requests(sink, "orders")
            )
            assert [key for key, n in flags.items() if n > 1] == [], "a repeat not flagged redelivered"
            assert (await node(gateway, "orders"))["restarts"] == 0, "the source's stream stayed open"
            for proc in gateway.procs:
                assert proc.proc is not None and proc.proc.returncode is None, (
                    f"the same {proc.name} throughout"
                )
        except BaseException:
            gateway.dump()
            raise
        finally:
            await gateway.stop()


async def test_standalone_gateway_run_amqp_delivers_every_message_once_in_order(
    tmp_path: Path, broker: RabbitMQ, sink: HttpSink
) -> None:
    async with channel(broker.url) as chan:
        exchange = await declare(chan, "standalone", "standalone", "orders.#")
        sent = await publish(exchange, "orders.eu", (f"message {n}" for n in range(30)), "standalone")
        source = durable_source(broker.url, "standalone", "standalone", "orders.#")
        gateway = pod(tmp_path, sink, orders=source)
        gateway.pod = False
        try:
            await gateway.start()
            await delivered(sink, "orders", 30, "30 messages from gateway run amqp")
            assert ids(sink, "orders") == sent, "each message once, in order, by its message id"
            requests = _requests(sink, "orders")
            assert [r.body.decode() for r in requests] == [f"message {n}" for n in range(30)]
            assert {r.headers["ce-eventsubject"] for r in requests} == {"orders.eu"}
            assert {r.headers["ce-redelivered"] for r in requests} == {"false"}
        except BaseException:
            gateway.dump()
            raise
        finally:
            await gateway.stop()
            await chan.queue_delete("standalone")


async def test_the_rate_limit_holds_to_within_a_tenth_over_ten_periods(
    tmp_path: Path, broker: RabbitMQ
) -> None:
    sink = TimedSink(free_port())
    await sink.start()
    async with channel(broker.url) as chan:
        exchange = await declare(chan, "paced", "paced", "orders.#")
        await publish(exchange, "orders.eu", (f"m {n}" for n in range(RATE_BACKLOG)), "paced")
        rate = f"rateLimit: {RATE_LIMIT}\nratePeriod: 1"
        gateway = pod(tmp_path, sink, paced=durable_source(broker.url, "paced", "paced", "orders.#", rate))
        try:
            await gateway.start()
            await wait_until(lambda: bool(sink.arrived), what="the first message")
            end = sink.arrived[0] + RATE_PERIODS
            await asyncio.sleep(end - time.monotonic() + 0.2)  # the measured periods themselves
            count = sum(1 for at in sink.arrived if at <= end)
            wanted = RATE_LIMIT * RATE_PERIODS
            assert 0.9 * wanted <= count <= 1.1 * wanted, f"{count} arrived in {RATE_PERIODS} periods"
            assert ids(sink, "paced") == [f"paced-{n}" for n in range(len(sink.arrived))], "in order"
        except BaseException:
            gateway.dump()
            raise
        finally:
            await gateway.stop()
            await sink.stop()
            await chan.queue_delete("paced")


async def test_an_invalid_config_is_refused_naming_the_field_by_validate_and_in_the_client_status(
    tmp_path: Path, broker: RabbitMQ, sink: HttpSink
) -> None:
    bad = f"url: {broker.url}\nexchangeName: refused\nexchangeType: fanfare\nroutingKey: k"
    gateway = pod(tmp_path, sink, bad=bad)
    code, out, err = await run_to_end([*GATEWAY, "validate", "amqp", str(gateway.config)])
    assert code == 1, (out, err)
    assert "INVALID bad: exchangeType: must be one of direct, fanout, topic, headers, got 'fanfare'" in out
    held = broker.connections()
    try:
        await gateway.start()
        await wait_until(
            lambda: phase_is(gateway, "bad", "Error", "exchangeType: must be one of"),
            what="the client's status names the bad field",
        )
        assert broker.connections() == held, "a refused source never connects"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_removing_a_source_from_the_watched_file_closes_its_broker_connection(
    tmp_path: Path, broker: RabbitMQ, sink: HttpSink
) -> None:
    held = broker.connections()
    source = durable_source(broker.url, "removed", "removed", "orders.#")
    gateway = pod(tmp_path, sink, orders=source)
    try:
        await gateway.start()
        await wait_until(lambda: phase_is(gateway, "orders", "Running"), what="the source connected")
        await wait_until(lambda: broker.connections() == held + 1, what="the source's one connection")
        gateway.config.write_text(configmap())
        await wait_until(lambda: _no_node(gateway, "orders"), what="the source removed from status")
        await wait_until(lambda: broker.connections() == held, what="the source's connection closed")
        assert gateway.server is not None and "[orders] Event source stopped." in gateway.server.text()
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()
        async with channel(broker.url) as chan:
            await chan.queue_delete("removed")


async def _no_node(gateway: Gateway, source: str) -> bool:
    return await node(gateway, source) == {}


async def test_a_v0_11_client_validates_and_streams_an_exclusive_queue_from_gateway_serve_amqp(
    tmp_path: Path, broker: RabbitMQ
) -> None:
    gateway = Gateway(tmp_path, tmp_path / "unused.yaml", [], kind="amqp")
    try:
        await gateway.start_server()
        invalid, valid = (
            ("noexchange", f"url: {broker.url}\nexchangeType: topic\nroutingKey: k"),
            (
                "legacy",
                f"url: {broker.url}\nexchangeName: legacy\nexchangeType: topic\nroutingKey: 'legacy.#'\n"
                + STEADY_RETRY,
            ),
        )
        client = await v011_client.start(tmp_path, f"127.0.0.1:{gateway.grpc_port}", invalid, valid)
        server = gateway.server
        assert server is not None
        await wait_until(
            lambda: "[legacy] Consuming from queue 'amq.gen-" in server.text(),
            what="the v0.11 source consuming from its exclusive, server-named queue",
        )
        async with channel(broker.url) as chan:
            exchange = await chan.declare_exchange("legacy", "topic", durable=True)
            await publish(exchange, "legacy.eu", (f"v0.11 {n}" for n in range(3)), "legacy")
        result = await v011_client.result(client)
        assert result["invalid"][0] is False
        assert "'noexchange'" in result["invalid"][1] and "exchangeName:" in result["invalid"][1]
        assert result["valid"] == [True, ""]
        assert result["events"] == [["legacy", f"v0.11 {n}"] for n in range(3)]
        await wait_until(
            lambda: "[legacy] Event source stopped." in server.text(), what="the cancel stops the source"
        )
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()
