"""Messages of a real mosquitto streamed by the MQTT gateway server, as a client reads them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.harness.brokers import Mosquitto
from tests.kafka.conftest import payloads
from tests.mqtt.conftest import publish, source_yaml
from tests.nats.conftest import ack, open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


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
