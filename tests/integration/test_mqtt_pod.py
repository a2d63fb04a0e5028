"""The MQTT gateway as real processes against a real mosquitto: ``gateway serve mqtt`` beside ``gateway
client`` (a pod), ``gateway run mqtt`` (standalone), ``gateway validate mqtt``, and a client that
speaks only the v0.11 proto, each delivering to (or reading as) a subscriber.

mosquitto keeps its sessions and queued messages across ``stop``/``start`` (persistence on), so a
source with ``persistentSession: true`` rides out a broker outage: what is published while the
gateway reconnects waits for it in the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import v011_client
from tests.harness.brokers import Mosquitto, mosquitto
from tests.harness.brokers_mqtt import mqtt_client
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.http_sink import HttpSink, Request
from tests.harness.kafka import node, phase_is
from tests.harness.mqtt import STEADY_RETRY, Publisher, source
from tests.harness.processes import run_to_end, wait_until

pytestmark = pytest.mark.slow

OUTAGE = 10.0
"""Seconds the broker stays down: dozens of the source's 200 ms retries."""
PATH = "/events"
PERSISTENT = ("qos: 1", "persistentSession: true")


@pytest.fixture
async def broker() -> AsyncIterator[Mosquitto]:
    async with mosquitto() as server:
        yield server


def _requests(sink: HttpSink, name: str) -> list[Request]:
    return [r for r in sink.requests[PATH] if r.headers.get("ce-subject") == name]


def bodies(sink: HttpSink, name: str, *, dup: bool | None = None) -> list[str]:
    """What ``name`` delivered, in arrival order; with ``dup``, only arrivals flagged (or not) so."""
    return [
        r.body.decode()
        for r in _requests(sink, name)
        if dup is None or (r.headers.get("ce-dup") == "true") == dup
    ]


async def delivered(sink: HttpSink, name: str, count: int, what: str, timeout: float = 20) -> None:
    await wait_until(lambda: len(_requests(sink, name)) >= count, what=what, timeout=timeout)


def pod(tmp_path: Path, sink: HttpSink, **sources: str) -> Gateway:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(**sources))
    return Gateway(tmp_path, config, [f"{sink.url}{PATH}"], kind="mqtt")


async def running(gateway: Gateway, name: str, part: str = "") -> None:
    """Until the client's status shows ``name`` subscribed (what is published from then on is its)."""
    await wait_until(
        lambda: phase_is(gateway, name, "Running", part), what=f"{name!r} Running {part}", timeout=20
    )


def numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix} {n}" for n in range(count)]


async def test_a_pod_delivers_qos_1_in_order_and_resumes_after_a_broker_outage_unrestarted(
    tmp_path: Path, broker: Mosquitto, sink: HttpSink
) -> None:
    gateway = pod(tmp_path, sink, orders=source(broker.url, "orders/#", "pod-orders", *PERSISTENT))
    try:
        await gateway.start()
        await running(gateway, "orders")
        async with Publisher(broker.port, "pod-publisher", persistent=True) as publisher:
            before = await publisher.publish_all("orders/new", numbered("before", 30))
            await delivered(sink, "orders", 30, "the 30 published before the outage")
            assert bodies(sink, "orders") == before
            await broker.stop()
            await wait_until(
                lambda: phase_is(gateway, "orders", "Error", "disconnected, stream open"),
                what="the client's status shows the source in Error",
            )
            # Published while the broker is down: paho holds them (a persistent session of its own)
            # and sends them once it connects again.
            during = numbered("during", 10)
            held = [publisher.publish("orders/new", payload) for payload in during]
            await asyncio.sleep(OUTAGE)  # the outage itself: the gateway must ride it out, not be restarted
            assert (await node(gateway, "orders"))["phase"] == "Error", "still Error all through the outage"
            await broker.start()
            # Right after the broker is back, most likely before the source has reconnected: the
            # broker keeps them for the source's persistent session.
            async with mqtt_client(broker.port, "pod-after") as after_client:
                after = numbered("after", 10)
                for payload in after:
                    await after_client.publish("orders/new", payload.encode(), qos=1)
            async with asyncio.timeout(20):
                await asyncio.gather(*held)
        await running(gateway, "orders", "reconnected 1 time(s)")
        await wait_until(
            lambda: len(bodies(sink, "orders", dup=False)) >= 50,
            what="the 20 published during and right after the outage",
        )
        fresh = bodies(sink, "orders", dup=False)
        assert fresh[:30] == before and sorted(fresh[30:]) == sorted(during + after), fresh
        assert [b for b in fresh if b.startswith("during")] == during, "the held ones in order"
        assert [b for b in fresh if b.startswith("after")] == after, "the ones after in order"
        assert set(bodies(sink, "orders", dup=True)) <= set(before), (
            "only what was unacknowledged when the broker stopped comes again, flagged dup"
        )
        assert (await node(gateway, "orders"))["restarts"] == 0, "the source's stream stayed open"
        for proc in gateway.procs:
            assert proc.proc is not None and proc.proc.returncode is None, f"the same {proc.name} throughout"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_standalone_gateway_run_mqtt_delivers_qos_1_messages_in_order(
    tmp_path: Path, broker: Mosquitto, sink: HttpSink
) -> None:
    gateway = pod(tmp_path, sink, orders=source(broker.url, "orders/+", "standalone", "qos: 1"))
    gateway.pod = False
    try:
        await gateway.start()
        await running(gateway, "orders")
        async with Publisher(broker.port, "standalone-publisher") as publisher:
            sent = await publisher.publish_all("orders/new", numbered("message", 30))
        await delivered(sink, "orders", 30, "30 messages from gateway run mqtt")
        assert bodies(sink, "orders") == sent
        requests = _requests(sink, "orders")
        assert {r.headers["ce-eventsubject"] for r in requests} == {"orders/new"}
        assert {r.headers["ce-qos"] for r in requests} == {"1"}
        assert len({r.headers["ce-id"] for r in requests}) == 30, "each message its own id"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_invalid_configs_and_a_shared_client_id_are_refused_naming_the_field_by_validate_and_status(
    tmp_path: Path, broker: Mosquitto, sink: HttpSink
) -> None:
    gateway = pod(
        tmp_path,
        sink,
        bad=source(broker.url, "a/#/b", "bad", "qos: 3"),
        one=source(broker.url, "one", "twin"),
        two=source(broker.url, "two", "twin"),
    )
    code, out, err = await run_to_end([*GATEWAY, "validate", "mqtt", str(gateway.config)])
    assert code == 1, (out, err)
    lines = out.splitlines()
    bad = next(line for line in lines if line.startswith("INVALID bad: "))
    assert "topic: must be an MQTT topic filter" in bad and "qos: must be 0, 1 or 2, got 3" in bad
    assert "INVALID one: clientId: 'twin' is the client id of event source 'two' too" in lines
    assert "INVALID two: clientId: 'twin' is the client id of event source 'one' too" in lines
    try:
        await gateway.start()
        for name, part in (
            ("bad", "qos: must be 0, 1 or 2, got 3"),
            ("one", "clientId: 'twin' is the client id of event source 'two'"),
            ("two", "clientId: 'twin' is the client id of event source 'one'"),
        ):
            await wait_until(
                lambda: phase_is(gateway, name, "Error", part),  # noqa: B023 - awaited within the iteration
                what=f"the client's status names the bad field of {name!r}",
            )
        assert broker.connections() == 0, "a refused source never connects"
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def test_removing_a_source_from_the_watched_file_closes_its_connection_and_only_its(
    tmp_path: Path, broker: Mosquitto, sink: HttpSink
) -> None:
    kept = source(broker.url, "kept", "pod-kept", "qos: 1")
    gateway = pod(tmp_path, sink, kept=kept, gone=source(broker.url, "gone", "pod-gone"))
    try:
        await gateway.start()
        await running(gateway, "kept")
        await running(gateway, "gone")
        assert broker.connections() == 2, "one connection per source"
        gateway.config.write_text(configmap(kept=kept))
        await wait_until(lambda: _no_node(gateway, "gone"), what="the source removed from status")
        await wait_until(lambda: broker.connections() == 1, what="the removed source's connection closed")
        assert gateway.server is not None and "[gone] Event source stopped." in gateway.server.text()
        async with Publisher(broker.port, "removal-publisher") as publisher:
            await publisher.publish_all("kept", ["still here"])
            await publisher.publish_all("gone", ["nobody"])
        await delivered(sink, "kept", 1, "the kept source still delivers")
        assert bodies(sink, "gone") == []
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()


async def _no_node(gateway: Gateway, name: str) -> bool:
    return await node(gateway, name) == {}


async def test_a_v0_11_client_validates_and_streams_a_source_from_gateway_serve_mqtt(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gateway = Gateway(tmp_path, tmp_path / "unused.yaml", [], kind="mqtt")
    try:
        await gateway.start_server()
        invalid, valid = (
            ("noclient", f"url: {broker.url}\ntopic: legacy"),
            ("legacy", f"url: {broker.url}\ntopic: legacy\nclientId: v011-legacy\n" + STEADY_RETRY),
        )
        client = await v011_client.start(tmp_path, f"127.0.0.1:{gateway.grpc_port}", invalid, valid)
        server = gateway.server
        assert server is not None
        await wait_until(
            lambda: "Subscribed to 'legacy' at QoS 0 (new session)." in server.text(),
            what="the v0.11 source subscribed at QoS 0, as v0.11 meant",
        )
        async with Publisher(broker.port, "v011-publisher") as publisher:
            await publisher.publish_all("legacy", numbered("v0.11", 3))
        result = await v011_client.result(client)
        assert result["invalid"][0] is False
        assert "'noclient'" in result["invalid"][1] and "client id must be specified" in result["invalid"][1]
        assert result["valid"] == [True, ""]
        assert result["events"] == [["legacy", f"v0.11 {n}"] for n in range(3)]
        await wait_until(
            lambda: "[legacy] Event source stopped." in server.text(), what="the cancel stops the source"
        )
        await wait_until(lambda: broker.connections() == 0, what="the source's connection closed")
    except BaseException:
        gateway.dump()
        raise
    finally:
        await gateway.stop()
