"""Core NATS sources against a real nats-server, through the server base over real gRPC.

Streams are opened by hand, as a v0.11 client (StartEventSource) or as ours (StreamEventSource with
``StreamControl`` written by the test), so each test sees the wire contract itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from nats.aio.client import Client

from common.rpc import eventing_pb2
from gateways.nats import core, metrics
from tests.harness.processes import wait_until
from tests.nats.conftest import Broker, ack, drain, open_stream, source_yaml, spec, start
from tests.server.test_control_channel import Reader

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
OUTAGE = 10.0
"""Seconds the broker stays down in the outage test: several of nats-py's reconnect attempts."""


async def read_events(call: Any, count: int) -> list[eventing_pb2.Event]:
    events: list[eventing_pb2.Event] = []
    async with asyncio.timeout(10):
        async for message in call:
            events.extend(message.batch or (message,))
            if len(events) >= count:
                return events
    return events


async def take(reader: Reader, count: int) -> list[str]:
    """The next ``count`` events' payloads, with every state message read meanwhile, in order
    (``state <CONNECTION> <reconnects> <reason>``)."""
    seen: list[str] = []
    events = 0
    while events < count:
        message = await reader.message(timeout=20)
        assert message is not None and not message.HasField("end"), message
        if message.HasField("state"):
            state = message.state
            name = eventing_pb2.SourceState.Connection.Name(state.connection)
            seen.append(f"state {name} {state.reconnects} {state.reason}".rstrip())
        else:
            batch = message.event.batch or (message.event,)
            seen.extend(e.payload.decode() for e in batch)
            events += len(batch)
    return seen


async def test_messages_arrive_in_order_byte_for_byte_with_their_subject_headers_and_content_type(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    call = stub.StartEventSource(spec("orders", source_yaml(broker.url, "orders.*")))
    await broker.subscribed("orders", "orders.*")
    bodies = [f"order {n}".encode() for n in range(40)] + [b"", bytes(range(256))]
    for n, body in enumerate(bodies):
        await publisher.publish(f"orders.n{n % 3}", body)
    await publisher.publish(
        "orders.json",
        b'{"id":1}',
        headers={"Content-Type": "application/json; charset=utf-8", "Nats-Msg-Id": "order-1", "X-Team": "eu"},
    )
    await publisher.publish("orders.bad", b"x", headers={"content-type": "json"})
    events = await read_events(call, len(bodies) + 2)
    call.cancel()
    assert [e.payload for e in events[: len(bodies)]] == bodies
    assert [e.subject for e in events[:3]] == ["orders.n0", "orders.n1", "orders.n2"]
    plain, named, mislabelled = events[0], events[-2], events[-1]
    assert re.fullmatch(f"orders:{UUID}", plain.id), plain.id
    assert plain.content_type == ""
    assert "headers" not in plain.extensions
    assert named.id == "orders:order-1"
    assert named.content_type == "application/json; charset=utf-8"
    assert json.loads(named.extensions["headers"]) == {
        "Content-Type": ["application/json; charset=utf-8"],
        "Nats-Msg-Id": ["order-1"],
        "X-Team": ["eu"],
    }
    assert mislabelled.content_type == "application/octet-stream"
    assert named.time.endswith("Z")


async def test_a_queue_group_shares_the_messages_each_going_to_one_source(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    config = source_yaml(broker.url, "work", "queueGroup: workers")
    calls = [stub.StartEventSource(spec(name, config)) for name in ("worker-a", "worker-b")]
    for name in ("worker-a", "worker-b"):
        await broker.subscribed(name, "work")
    for n in range(60):
        await publisher.publish("work", str(n).encode())
    await publisher.flush()
    received: dict[str, list[bytes]] = {"worker-a": [], "worker-b": []}

    async def collect(name: str, call: Any) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for event in call:
                received[name].append(event.payload)

    readers = [asyncio.ensure_future(collect(n, c)) for n, c in zip(received, calls, strict=True)]
    await wait_until(lambda: sum(len(v) for v in received.values()) == 60, what="all 60 messages")
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers)
    assert sorted(int(p) for v in received.values() for p in v) == list(range(60))
    assert all(received.values()), f"one source got nothing: {received}"


async def test_stopping_a_source_closes_its_subscription_and_its_connection(
    stub: EventingAsyncStub, broker: Broker
) -> None:
    before = broker.connections()
    call = stub.StartEventSource(spec("closing", source_yaml(broker.url, "closing")))
    await broker.subscribed("closing", "closing")
    assert broker.connections() == before + 1
    call.cancel()
    await wait_until(lambda: broker.connections() == before, what="the source's connection closed")
    assert await broker.subscriptions("gateways nats source closing") == []


async def test_a_broker_outage_is_told_on_the_wire_and_delivery_resumes_on_the_same_stream(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    call, reader = await open_stream(stub, start("flap", source_yaml(broker.url, "flap"), state=True))
    await broker.subscribed("flap", "flap")
    for n in range(5):
        await publisher.publish("flap", f"before {n}".encode())
    seen = await take(reader, 5)
    await broker.stop()
    await asyncio.sleep(OUTAGE)  # the outage itself: the gateway must ride it out, not be restarted
    await broker.start()
    await broker.subscribed("flap", "flap", timeout=20)
    for n in range(5):
        await publisher.publish("flap", f"after {n}".encode())
    seen += await take(reader, 5)
    payloads = [item for item in seen if not item.startswith("state")]
    states = [item for item in seen if item.startswith("state")]
    assert payloads == [f"before {n}" for n in range(5)] + [f"after {n}" for n in range(5)]
    assert states[0] == "state CONNECTED 0", "the first state comes once subscribed"
    assert states[1].startswith("state DISCONNECTED 0 UnexpectedEOF"), states
    assert states[-1] == "state CONNECTED 1"
    assert seen.index(states[1]) > seen.index("before 4") and seen.index(states[-1]) < seen.index("after 0")
    call.cancel()


async def test_a_broker_down_at_start_is_retried_and_said_until_it_comes(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    await broker.stop()
    call, reader = await open_stream(stub, start("late", source_yaml(broker.url, "late"), state=True))
    first = await reader.message()
    assert first is not None and first.HasField("state"), first
    assert first.state.connection == eventing_pb2.SourceState.DISCONNECTED
    assert first.state.reason.startswith(f"cannot connect to {broker.url}: ConnectionRefusedError")
    await broker.start()
    await broker.subscribed("late", "late")
    await publisher.publish("late", b"at last")
    assert (await take(reader, 1))[-2:] == ["state CONNECTED 1", "at last"]
    call.cancel()


async def test_a_drained_core_source_ends_ok_after_what_it_received_and_unsubscribes(
    stub: EventingAsyncStub, broker: Broker, publisher: Client
) -> None:
    call, reader = await open_stream(stub, start("drained", source_yaml(broker.url, "drained")))
    await broker.subscribed("drained", "drained")
    for n in range(20):
        await publisher.publish("drained", str(n).encode())
    await publisher.flush()
    await call.write(drain())
    payloads: list[bytes] = []
    while (message := await reader.message()) is not None and message.HasField("event"):
        payloads.extend(e.payload for e in message.event.batch or (message.event,))
    assert message is not None and message.HasField("end"), message
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK
    assert payloads == [str(n).encode() for n in range(20)]
    assert await broker.subscriptions("gateways nats source drained") == []


async def test_core_nats_drops_what_it_cannot_hold_while_back_pressured_and_counts_the_drops(
    stub: EventingAsyncStub, broker: Broker, publisher: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "PENDING_MESSAGES", 10)
    call, reader = await open_stream(stub, start("slow", source_yaml(broker.url, "slow"), window=1))
    await broker.subscribed("slow", "slow")
    dropped = metrics.sample("nats_messages_dropped_total", source="slow", reason="slow_consumer")
    for n in range(300):
        await publisher.publish("slow", str(n).encode())
    await publisher.flush()
    await wait_until(
        lambda: (
            metrics.sample("nats_messages_dropped_total", source="slow", reason="slow_consumer") > dropped
        ),
        what="slow-consumer drops counted",
    )
    received: list[int] = []
    while True:
        try:
            events = await reader.events(1)
        except TimeoutError:
            break
        received.extend(int(e.payload) for e in events)
        await call.write(ack(*(e.sequence for e in events)))
        lost = metrics.sample("nats_messages_dropped_total", source="slow", reason="slow_consumer") - dropped
        if len(received) + lost == 300:
            break
    lost = metrics.sample("nats_messages_dropped_total", source="slow", reason="slow_consumer") - dropped
    assert len(received) + lost == 300, "every message is either delivered or counted as dropped"
    assert received == sorted(received), "what is delivered stays in order"
    assert lost > 0
    call.cancel()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("", "data: configuration must be non empty"),
        ("subject: foo", "url: url must be specified"),
        ("url: nats://localhost:4222", "subject: subject must be specified"),
        ("url: nats://localhost\nsubject: foo\nsubjet: bar", "subjet: unknown field"),
        ("url: http://localhost\nsubject: foo", "url: 'http://localhost' must be nats://host[:port]"),
        ("url: nats://localhost\nsubject: foo\njetStream: {ackWait: 1ms}", "jetStream.ackWait: must be"),
    ],
)
async def test_invalid_configs_are_refused_naming_the_field(
    stub: EventingAsyncStub, data: str, field: str
) -> None:
    verdict = await stub.ValidateEventSource(spec("bad", data))
    assert not verdict.isValid
    assert field in verdict.reason
    call = stub.StartEventSource(spec("bad", data))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
