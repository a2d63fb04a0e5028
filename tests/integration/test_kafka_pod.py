"""The Kafka gateway as real processes against a real Tansu: ``gateway serve kafka`` beside ``gateway
client`` (a pod), ``gateway run kafka`` (standalone), ``gateway validate kafka``, and a client that
speaks only the v0.11 proto, each delivering to (or reading as) a subscriber.

Tansu is memory-only: a broker restart comes back with no topics, no records and no committed
offsets, so the outage test recreates its topic, and tests of committed offsets restart the gateway,
never the broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.harness import v011_client
from tests.harness.brokers import Tansu, tansu
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.http_sink import HttpSink, Request
from tests.harness.kafka import FAST_RETRY, create_topic, group_source, node, phase_is, produce, producer
from tests.harness.processes import free_port, run_to_end, wait_until

pytestmark = pytest.mark.slow

OUTAGE = 10.0
"""Seconds the broker stays down: several of the source's 2 s probes and of aiokafka's reconnects."""
PARTITIONS = 3
PATH = "/events"
DELIVERY_WORK = 0.05


def by_partition(sink: HttpSink, source: str) -> dict[str, list[str]]:
    """The bodies ``source`` delivered, per ``partition`` extension, in arrival order."""
    found: dict[str, list[str]] = {}
    for request in _requests(sink, source):
        found.setdefault(request.headers["ce-partition"], []).append(request.body.decode())
    return found


def _requests(sink: HttpSink, source: str) -> list[Request]:
    return [r for r in sink.requests[PATH] if r.headers.get("ce-subject") == source]


def expected(*batches: dict[str, str]) -> dict[str, list[str]]:
    """What ``by_partition`` should show for ``produce``'s batches (ids ``topic/partition/offset``)."""
    found: dict[str, list[str]] = {}
    for batch in batches:
        for event_id, value in batch.items():
            found.setdefault(event_id.split("/")[1], []).append(value)
    return found


async def delivered(sink: HttpSink, source: str, count: int, what: str, timeout: float = 20) -> None:
    await wait_until(lambda: len(_requests(sink, source)) >= count, what=what, timeout=timeout)


def pod(tmp_path: Path, sink: HttpSink, **sources: str) -> Gateway:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(**sources))
    return Gateway(tmp_path, config, [f"{sink.url}{PATH}"], kind="kafka")


class SlowSink(HttpSink):
    """An HTTP subscriber that takes ``DELIVERY_WORK`` seconds to answer each event it records."""

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        await asyncio.sleep(DELIVERY_WORK)  # the subscriber's own work, so deliveries are under way
        return response


@pytest.fixture
async def slow_sink() -> AsyncIterator[SlowSink]:
    sink = SlowSink(free_port())
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture
async def broker() -> AsyncIterator[Tansu]:
    async with tansu() as server:
        yield server


async def test_a_pod_delivers_in_order_per_partition_and_resumes_after_a_broker_outage_unrestarted(
    tmp_path: Path, broker: Tansu, slow_sink: SlowSink
) -> None:
    sink = slow_sink
    await create_topic(broker.url, "orders", PARTITIONS)
    gateway = pod(tmp_path, sink, orders=group_source(broker.url, "orders", "pod"))
    try:
        await gateway.start()
        async with producer(broker.url) as client:
            before = await produce(client, "orders", (f"before {n}" for n in range(30)), PARTITIONS)
        # The broker goes while records are still being delivered: they settle during the outage,
        # so their offsets cannot be committed to the broker that held them.
        await delivered(sink, "orders", 10, "the first 10 records produced before the outage")
        await broker.stop()
        await wait_until(
            lambda: phase_is(gateway, "orders", "Error", "disconnected, stream open"),
            what="the client's status shows the source in Error",
        )
        await delivered(sink, "orders", 30, "the rest, read before the outage, delivered during it")
        assert by_partition(sink, "orders") == expected(before)
        await asyncio.sleep(OUTAGE)  # the outage itself: the gateway must ride it out, not be restarted
        await broker.start()
        # Tansu's memory store came back empty: no topic, no records, no committed offsets; records
        # produced before the outage and not yet read would be gone with it. The topic is made again
        # at once (as a cluster's provisioning would), and the group (no committed offset, oldest:
        # true) must read the new log from its first record: nothing of the old log's offsets counts.
        await create_topic(broker.url, "orders", PARTITIONS)
        await wait_until(
            lambda: phase_is(gateway, "orders", "Running", "reconnected"),
            what="the client's status shows the source Running again",
            timeout=20,
        )
        async with producer(broker.url) as client:
            after = await produce(client, "orders", (f"after {n}" for n in range(30)), PARTITIONS)
        await delivered(sink, "orders", 60, "the 30 records produced after the outage", timeout=30)
        assert by_partition(sink, "orders") == expected(before, after)
        assert (await node(gateway, "orders"))["restarts"] == 0, "the source's stream stayed open"
        for proc in gateway.procs:
            assert proc.proc is not None and proc.proc.returncode is None, f"the same {proc.name} throughout"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_committed_offsets_survive_a_clean_restart_of_the_pod_so_only_new_records_arrive(
    tmp_path: Path, broker: Tansu, sink: HttpSink
) -> None:
    await create_topic(broker.url, "orders", PARTITIONS)
    gateway = pod(tmp_path, sink, orders=group_source(broker.url, "orders", "restart"))
    try:
        await gateway.start()
        async with producer(broker.url) as client:
            first = await produce(client, "orders", (f"first {n}" for n in range(15)), PARTITIONS)
            await delivered(sink, "orders", 15, "the first 15")
            codes, _ = await gateway.stop_pod()
            assert codes == [0, 0]
            second = await produce(client, "orders", (f"second {n}" for n in range(15)), PARTITIONS)
        await gateway.start()
        # Per partition in offset order: a record read again from an offset not committed would come
        # before that partition's new ones, so once all 15 new ones are here, any repeat is too.
        await delivered(sink, "orders", 30, "the 15 produced while the pod was down")
        ids = Counter(r.headers["ce-id"] for r in _requests(sink, "orders"))
        assert [i for i, n in ids.items() if n > 1] == [], "a record delivered twice"
        assert by_partition(sink, "orders") == expected(first, second)
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_an_invalid_config_is_refused_naming_the_field_by_validate_and_in_the_client_status(
    tmp_path: Path, broker: Tansu, sink: HttpSink
) -> None:
    bad = f"url: {broker.url}\ntopic: orders"  # neither a partition nor a consumer group
    gateway = pod(tmp_path, sink, bad=bad)
    code, out, err = await run_to_end([*GATEWAY, "validate", "kafka", str(gateway.config)])
    assert code == 1, (out, err)
    assert "INVALID bad: partition: partition must be specified" in out
    try:
        await gateway.start()
        await wait_until(
            lambda: phase_is(gateway, "bad", "Error", "partition: partition must be specified"),
            what="the client's status names the bad field",
        )
        assert broker.connections() == 0, "a refused source never connects"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_removing_a_source_from_the_watched_file_closes_its_broker_connections(
    tmp_path: Path, broker: Tansu, sink: HttpSink
) -> None:
    await create_topic(broker.url, "orders")
    gateway = pod(tmp_path, sink, orders=group_source(broker.url, "orders", "removed"))
    try:
        await gateway.start()
        async with producer(broker.url) as client:
            await produce(client, "orders", ["joined"])
        await delivered(sink, "orders", 1, "a record, so the group has been joined")
        await wait_until(lambda: broker.connections() > 0, what="the source's own connections only")
        held = broker.connections()
        gateway.config.write_text(configmap())
        await wait_until(lambda: _no_node(gateway, "orders"), what="the source removed from status")
        await wait_until(lambda: broker.connections() == 0, what=f"all {held} connections closed")
        assert gateway.server is not None and "[orders] Event source stopped." in gateway.server.text()
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def _no_node(gateway: Gateway, source: str) -> bool:
    return await node(gateway, source) == {}


async def test_standalone_gateway_run_kafka_delivers_every_record_in_order_per_partition(
    tmp_path: Path, broker: Tansu, sink: HttpSink
) -> None:
    await create_topic(broker.url, "orders", PARTITIONS)
    gateway = pod(tmp_path, sink, orders=group_source(broker.url, "orders", "standalone"))
    gateway.pod = False
    try:
        await gateway.start()
        async with producer(broker.url) as client:
            records = await produce(client, "orders", (f"record {n}" for n in range(30)), PARTITIONS)
        await delivered(sink, "orders", 30, "30 records from gateway run kafka")
        assert by_partition(sink, "orders") == expected(records)
        requests = _requests(sink, "orders")
        assert sorted(r.headers["ce-id"] for r in requests) == sorted(records), "each record once, by its id"
        assert {r.headers["ce-eventsubject"] for r in requests} == {"orders"}
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_a_v0_11_client_validates_and_reads_one_partition_from_gateway_serve_kafka(
    tmp_path: Path, broker: Tansu
) -> None:
    await create_topic(broker.url, "legacy", 2)
    gateway = Gateway(tmp_path, tmp_path / "unused.yaml", [], kind="kafka")
    try:
        await gateway.start_server()
        invalid, valid = (
            ("nopartition", f"url: {broker.url}\ntopic: legacy"),
            ("legacy", f'url: {broker.url}\ntopic: legacy\npartition: "0"\n' + FAST_RETRY),
        )
        client = await v011_client.start(tmp_path, f"127.0.0.1:{gateway.grpc_port}", invalid, valid)
        server = gateway.server
        assert server is not None
        await wait_until(
            lambda: "Reading topic 'legacy' (partition 0 from the newest)" in server.text(),
            what="the v0.11 source reading partition 0 from its newest offset",
        )
        async with producer(broker.url) as records:
            await records.send_and_wait("legacy", b"elsewhere", partition=1)
            for n in range(3):
                await records.send_and_wait("legacy", f"v0.11 {n}".encode(), partition=0)
        result = await v011_client.result(client)
        assert result["invalid"][0] is False
        assert "'nopartition'" in result["invalid"][1] and "partition:" in result["invalid"][1]
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
