"""What ``SourceEvent.delivered`` and source state mean on the wire, over real gRPC with a bare
grpc.aio client writing ``StreamControl`` by hand: an acknowledging client decides when an event is
delivered; a v0.11 client's stream counts an event delivered once written and never carries state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.rpc import eventing_pb2
from tests.harness.processes import wait_until
from tests.kinds import JOURNAL
from tests.server.test_control_channel import ack, open_stream

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def start(
    name: str, data: str, *, acknowledges: bool = False, state: bool = False
) -> eventing_pb2.StreamControl:
    source = eventing_pb2.EventSource(id="1", name=name, data=data, version="v0.10")
    return eventing_pb2.StreamControl(
        start=eventing_pb2.StreamStart(source=source, acknowledges=acknowledges, source_state=state)
    )


def outcomes(name: str) -> dict[str, str]:
    return {k: v for k, v in JOURNAL.outcomes.items() if k.startswith(f"{name}:")}


async def test_with_an_acknowledging_client_an_event_is_delivered_only_once_acknowledged(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("acked", "count: 3\ntrack: true\nevery: 0.01", acknowledges=True))
    events = await reader.events(3)
    assert outcomes("acked") == {}, "written is not delivered"
    await call.write(ack(events[1].sequence))
    await wait_until(lambda: outcomes("acked") == {"acked:1": "delivered"}, what="the acknowledged one")
    await call.write(ack(events[0].sequence, events[2].sequence))
    await reader.until_end()
    await call.done_writing()
    await wait_until(lambda: len(outcomes("acked")) == 3, what="every outcome")
    assert set(outcomes("acked").values()) == {"delivered"}


async def test_events_never_acknowledged_are_not_delivered_when_the_stream_ends(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("unacked", "count: 0\ntrack: true\nevery: 0.01", acknowledges=True))
    events = await reader.events(2)
    await call.write(ack(events[0].sequence))
    call.cancel()
    await wait_until(lambda: len(outcomes("unacked")) >= 2, what="the outcomes once the stream is gone")
    found = outcomes("unacked")
    assert found["unacked:0"] == "delivered"
    assert found["unacked:1"] == "NotDelivered"


async def test_without_acknowledgements_written_counts_as_delivered(stub: EventingAsyncStub) -> None:
    call, reader = open_stream(stub)
    await call.write(start("plainctl", "count: 2\ntrack: true"))
    await reader.events(2)
    await wait_until(lambda: len(outcomes("plainctl")) == 2, what="delivered on write")
    assert set(outcomes("plainctl").values()) == {"delivered"}
    source = eventing_pb2.EventSource(id="2", name="v011", data="count: 2\ntrack: true", version="v0.10")
    assert len([e async for e in stub.StartEventSource(source)]) == 2
    await wait_until(lambda: len(outcomes("v011")) == 2, what="delivered on write, v0.11")
    assert set(outcomes("v011").values()) == {"delivered"}


async def test_a_client_that_asks_is_told_of_a_lost_connection_and_its_return_in_order(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("flap", "count: 0\nevery: 0.05\ndisconnect_at: 1\ndown_for: 0.3", state=True))
    seen: list[str] = []
    while len([s for s in seen if s.startswith("state")]) < 3:
        message = await reader.message()
        assert message is not None
        if message.HasField("state"):
            state = message.state
            connection = eventing_pb2.SourceState.Connection.Name(state.connection)
            seen.append(f"state {connection} {state.reason!r} {state.reconnects}")
        else:
            seen.extend(f"event {e.id}" for e in (message.event.batch or (message.event,)))
    assert seen[:4] == [
        "state CONNECTED '' 0",  # once the source serves: the client's status says Running only then
        "event flap:0",
        "event flap:1",
        "state DISCONNECTED 'the broker closed the connection' 0",
    ]
    assert seen[-1] == "state CONNECTED '' 1"
    call.cancel()


async def test_a_v0_11_stream_never_carries_state_nor_an_event_without_payload(
    stub: EventingAsyncStub,
) -> None:
    source = eventing_pb2.EventSource(
        id="3", name="flapv011", data="count: 4\nevery: 0.1\ndisconnect_at: 0\ndown_for: 0.1", version="v0.10"
    )
    events = [e async for e in stub.StartEventSource(source)]
    assert [e.payload for e in events] == [f"flapv011-{n}".encode() for n in range(4)]


async def test_a_control_stream_that_did_not_ask_gets_no_state(stub: EventingAsyncStub) -> None:
    call, reader = open_stream(stub)
    await call.write(start("quiet", "count: 3\nevery: 0.1\ndisconnect_at: 0\ndown_for: 0.05"))
    while (message := await reader.message()) is not None and not message.HasField("end"):
        assert message.HasField("event"), message
    await call.done_writing()
