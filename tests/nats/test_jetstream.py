"""JetStream sources against a real nats-server, through the server base over real gRPC.

The control channel is driven by hand: the test decides when (and whether) each event is
acknowledged, and reads the consumer's state from JetStream itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from common.rpc import eventing_pb2
from gateways.nats import metrics
from tests.harness.processes import wait_until
from tests.nats.conftest import Broker, ack, drain, open_stream, source_yaml, spec, start
from tests.nats.test_core import take
from tests.server.test_control_channel import Reader

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


async def orders(publisher: Client, *subjects: str) -> JetStreamContext:
    """The stream ORDERS on ``orders.>``, as an operator would create it."""
    js = publisher.jetstream()
    await js.add_stream(name="ORDERS", subjects=list(subjects or ("orders.>",)))
    return js


async def pending_is(js: JetStreamContext, durable: str, count: int) -> bool:
    """Whether the durable has ``count`` messages handed out and not acked, as JetStream says."""
    info = await js.consumer_info("ORDERS", durable)
    return bool(info.num_ack_pending == count)


def durable_source(broker: Broker, *lines: str) -> str:
    return source_yaml(
        broker.url, "orders.>", "jetStream:", "  stream: ORDERS", *(f"  {line}" for line in lines)
    )


async def test_a_message_is_acked_only_once_the_client_acknowledges_its_event(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    js = await orders(publisher)
    call, reader = await open_stream(stub, start("acked", durable_source(broker), acknowledges=True))
    for n in range(3):
        await js.publish(f"orders.n{n}", f"order {n}".encode(), headers={"Nats-Msg-Id": f"o{n}"})
    events = await reader.events(3)
    assert [e.id for e in events] == ["acked:ORDERS:1", "acked:ORDERS:2", "acked:ORDERS:3"]
    assert [e.subject for e in events] == ["orders.n0", "orders.n1", "orders.n2"]
    assert all(e.awaited for e in events), "each event's acknowledgement is waited for"
    assert {e.extensions["redelivered"] for e in events} == {"false"}
    assert await pending_is(js, "acked", 3), "written to the stream is not acknowledged"
    await call.write(ack(events[1].sequence))
    await wait_until(lambda: pending_is(js, "acked", 2), what="the acknowledged one acked")
    await call.write(ack(events[0].sequence, events[2].sequence))
    await wait_until(lambda: pending_is(js, "acked", 0), what="every one acked")
    assert metrics.sample("nats_jetstream_answers_total", source="acked", outcome="ack") == 3
    call.cancel()


@pytest.mark.parametrize("ending", ["stopped", "cancelled"])
async def test_a_message_never_acknowledged_is_delivered_again_to_the_next_stream(
    stub: EventingAsyncStub, broker: Broker, publisher: Client, ending: str
) -> None:
    js = await orders(publisher)
    name = f"again-{ending}"
    data = durable_source(broker)
    call, reader = await open_stream(stub, start(name, data, acknowledges=True))
    await js.publish("orders.x", b"must not be lost")
    (first,) = await reader.events(1)
    if ending == "stopped":  # the client stops the source without acknowledging
        stop = eventing_pb2.Stop(reason=eventing_pb2.STOP_REASON_CHANGED)
        await call.write(eventing_pb2.StreamControl(stop=stop))
        await reader.until_end()
        await call.done_writing()
    else:
        call.cancel()  # the client went away without acknowledging
    call, reader = await open_stream(stub, start(name, data, acknowledges=True))
    (second,) = await reader.events(1)
    assert second.payload == b"must not be lost"
    assert second.id == first.id == f"{name}:ORDERS:1", "the same stored message keeps its id"
    assert (second.extensions["redelivered"], second.extensions["deliverycount"]) == ("true", "2")
    assert metrics.sample("nats_jetstream_answers_total", source=name, outcome="nak") == 1
    await call.write(ack(second.sequence))
    await wait_until(lambda: pending_is(js, name, 0), what="acked at last")
    call.cancel()


async def test_a_drained_source_ends_only_once_what_it_handed_on_is_acknowledged(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    js = await orders(publisher)
    call, reader = await open_stream(stub, start("drained", durable_source(broker), acknowledges=True))
    for n in range(3):
        await js.publish("orders.d", str(n).encode())
    events = await reader.events(3)
    await call.write(drain())
    assert await reader.nothing_more(wait=FETCH_WAIT_AND_MORE), "the stream waits for the acknowledgements"
    await call.write(ack(*(e.sequence for e in events)))
    assert (await reader.until_end()).reason == "event source drained"
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK
    info = await js.consumer_info("ORDERS", "drained")
    assert (info.num_ack_pending, info.num_redelivered) == (0, 0)


FETCH_WAIT_AND_MORE = 3.0
"""Longer than a fetch waits (2 s): a source that did not wait for its acks would have ended by then."""


async def test_a_v0_11_client_has_each_message_acked_once_its_event_is_written(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    js = await orders(publisher)
    call = stub.StartEventSource(spec("plain", durable_source(broker, "deliverPolicy: all")))
    await js.publish("orders.p", b"one")
    await js.publish("orders.p", b"two")
    payloads: list[bytes] = []
    async for event in call:
        payloads.append(event.payload)
        if len(payloads) == 2:
            break
    assert payloads == [b"one", b"two"]
    await wait_until(lambda: pending_is(js, "plain", 0), what="acked once written")
    call.cancel()


async def test_a_missing_stream_is_said_and_retried_until_an_operator_creates_it(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    call, reader = await open_stream(stub, start("waiting", durable_source(broker), state=True))
    first = await take_state(reader)
    assert first.startswith(
        "state DISCONNECTED 0 event source 'waiting': JetStream has no stream 'ORDERS'"
    ), first
    js = await orders(publisher)
    await js.publish("orders.late", b"at last")
    assert (await take(reader, 1))[-2:] == ["state CONNECTED 1", "at last"]
    call.cancel()


async def take_state(reader: Reader, timeout: float = 10) -> str:
    """The next message, which must be a state: ``state <CONNECTION> <reconnects> <reason>``."""
    message = await reader.message(timeout=timeout)
    assert message is not None and message.HasField("state"), message
    state = message.state
    name = eventing_pb2.SourceState.Connection.Name(state.connection)
    return f"state {name} {state.reconnects} {state.reason}".rstrip()


async def test_a_message_held_past_ack_wait_is_kept_in_progress_not_delivered_again(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    js = await orders(publisher)
    config = durable_source(broker, "ackWait: 1s")
    call, reader = await open_stream(stub, start("slow", config, acknowledges=True))
    await js.publish("orders.s", b"held")
    (event,) = await reader.events(1)
    # Held unacknowledged for over twice ackWait: without progress notes JetStream would redeliver.
    assert await reader.nothing_more(wait=2.5)
    assert metrics.sample("nats_jetstream_answers_total", source="slow", outcome="in_progress") >= 2
    await call.write(ack(event.sequence))
    await wait_until(lambda: pending_is(js, "slow", 0), what="acked")
    assert (await js.consumer_info("ORDERS", "slow")).num_redelivered == 0
    call.cancel()
