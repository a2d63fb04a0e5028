"""Messages of a real mosquitto streamed by the MQTT gateway server, as a client reads them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.brokers import Mosquitto
from tests.harness.processes import wait_until
from tests.kafka.conftest import payloads
from tests.kafka.test_stream import no_source_running
from tests.mqtt.conftest import publish, source_yaml
from tests.nats.conftest import ack, open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub
    from tests.server.test_control_channel import Reader


async def state_until(reader: Reader, wanted: str, timeout: float = 20.0) -> list[str]:
    """States read until one starts with ``wanted`` (a reconnect can fail a few times first)."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not (seen and seen[-1].startswith(wanted)):
            seen.append(await take_state(reader, timeout=timeout))
    return seen


async def test_qos_1_messages_arrive_in_order_with_their_metadata(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "sensors/+/t", "qos: 1")
    call, reader = await open_stream(stub, start("sensors", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "sensors/a/t", *(f"m{n}" for n in range(10)))
    events = await reader.events(10)
    assert payloads(events) == [f"m{n}" for n in range(10)]
    first = events[0]
    assert first.subject == "sensors/a/t" and first.id.startswith("sensors:")
    assert (first.extensions["qos"], first.extensions["retain"], first.extensions["dup"]) == (
        "1",
        "false",
        "false",
    )
    await call.write(ack(*(e.sequence for e in events)))
    call.cancel()


async def test_qos_0_is_the_default_as_v0_11_meant(stub: EventingAsyncStub, broker: Mosquitto) -> None:
    call, reader = await open_stream(stub, start("plain", source_yaml(broker.url, "plain"), state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "plain", "hello", qos=1)
    (event,) = await reader.events(1)
    assert event.payload == b"hello" and event.extensions["qos"] == "0"
    call.cancel()


async def test_a_persistent_session_keeps_what_is_published_while_the_source_is_gone(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "kept", "qos: 1", "persistentSession: true", client_id="gw-kept")
    call, reader = await open_stream(stub, start("kept", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    call.cancel()
    await no_source_running()
    await asyncio.to_thread(publish, broker.port, "kept", "while-away-1", "while-away-2")
    again, reader = await open_stream(stub, start("kept", data, acknowledges=True))
    assert payloads(await reader.events(2)) == ["while-away-1", "while-away-2"]
    again.cancel()


async def test_unacknowledged_qos_1_messages_come_again_flagged_and_acknowledged_ones_do_not(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "redo", "qos: 1", "persistentSession: true", client_id="gw-redo")
    call, reader = await open_stream(stub, start("redo", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "redo", "a", "b", "c", "d")
    events = await reader.events(4)
    # b is acknowledged before a: PUBACKs go in order, so only a and b are told once a is in.
    await call.write(ack(events[1].sequence))
    await call.write(ack(events[0].sequence))
    await asyncio.sleep(0)  # the acknowledgements reach the server on the stream before the cancel
    await reader.nothing_more(0.3)
    call.cancel()
    await no_source_running()
    again, reader = await open_stream(stub, start("redo", data, acknowledges=True))
    redone = await reader.events(2)
    assert payloads(redone) == ["c", "d"]
    assert {e.extensions["dup"] for e in redone} == {"true"}
    again.cancel()


async def test_a_broker_outage_shows_in_the_state_and_delivery_resumes_after_it(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "out", "qos: 1", "persistentSession: true")
    call, reader = await open_stream(stub, start("out", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await broker.stop()
    down = await take_state(reader, timeout=10)
    assert down.startswith("state DISCONNECTED 0"), down
    await broker.start()
    assert (await state_until(reader, "state CONNECTED"))[-1] == "state CONNECTED 1"
    await asyncio.to_thread(publish, broker.port, "out", "after")
    assert await take(reader, 1) == ["after"]
    call.cancel()


async def test_stopping_a_source_closes_its_connection(stub: EventingAsyncStub, broker: Mosquitto) -> None:
    call, reader = await open_stream(stub, start("closing", source_yaml(broker.url, "c"), state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    assert broker.connections() == 1
    call.cancel()
    await wait_until(lambda: broker.connections() == 0, what="the source's connection closed")


async def test_mqtt_5_receive_maximum_holds_the_broker_at_the_window(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "win", "qos: 1", "protocol: '5'")
    call, reader = await open_stream(stub, start("win", data, acknowledges=True, state=True, window=5))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "win", *(f"m{n}" for n in range(20)))
    first = await reader.events(5)
    assert await reader.nothing_more(0.5)
    await call.write(ack(*(e.sequence for e in first)))
    more = await reader.events(5)
    assert payloads(more) == [f"m{n}" for n in range(5, 10)]
    call.cancel()


async def test_qos_2_messages_arrive_once_each(stub: EventingAsyncStub, broker: Mosquitto) -> None:
    data = source_yaml(broker.url, "two", "qos: 2")
    call, reader = await open_stream(stub, start("two", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "two", "x", "y", qos=2)
    events = await reader.events(2)
    assert payloads(events) == ["x", "y"] and {e.extensions["qos"] for e in events} == {"2"}
    await call.write(ack(*(e.sequence for e in events)))
    assert await reader.nothing_more(0.5)
    call.cancel()


async def test_another_client_with_the_same_client_id_is_named_in_the_state(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    data = source_yaml(broker.url, "t", "protocol: '5'", client_id="shared-id")
    call, reader = await open_stream(stub, start("twin", data, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shared-id", protocol=mqtt.MQTTv5)
    await asyncio.to_thread(intruder.connect, "127.0.0.1", broker.port)
    intruder.loop_start()
    try:
        seen = await state_until(reader, "state DISCONNECTED", timeout=15)
        while "client id 'shared-id'" not in seen[-1]:
            seen += await state_until(reader, "state DISCONNECTED", timeout=15)
        assert "two clients with one id disconnect each other" in seen[-1], seen
    finally:
        intruder.disconnect()
        intruder.loop_stop()
    call.cancel()


async def test_a_qos_2_message_not_yet_delivered_comes_again_on_the_next_connection(
    stub: EventingAsyncStub, broker: Mosquitto
) -> None:
    """Its PUBREC is held too: until then the broker still owns the message."""
    data = source_yaml(broker.url, "q2", "qos: 2", "persistentSession: true", client_id="gw-q2")
    call, reader = await open_stream(stub, start("q2", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await asyncio.to_thread(publish, broker.port, "q2", "first", "second", qos=2)
    first, held = await reader.events(2)
    assert held.payload == b"second"
    await call.write(ack(first.sequence))  # the first is delivered: PUBREC, PUBREL, PUBCOMP
    assert await reader.nothing_more(0.5)
    call.cancel()
    await no_source_running()
    again, reader = await open_stream(stub, start("q2", data, acknowledges=True))
    (redone,) = await reader.events(1)
    assert redone.payload == b"second"
    await again.write(ack(redone.sequence))
    assert await reader.nothing_more(0.5)
    again.cancel()
