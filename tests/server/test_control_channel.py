"""StreamEventSource over real gRPC: the window, acknowledgement, drain, stop and the confirmed end.

The client side here is a bare grpc.aio call writing ``StreamControl`` messages by hand, not the
gateway client, so each test sees the wire contract itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from common.rpc import eventing_pb2
from common.server.app import GatewayServer
from tests.kinds import JOURNAL

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def start(name: str, data: str, *, events: int = 0, size: int = 0) -> eventing_pb2.StreamControl:
    source = eventing_pb2.EventSource(id="1", name=name, data=data, version="v0.10")
    return eventing_pb2.StreamControl(
        start=eventing_pb2.StreamStart(source=source, max_unacked_events=events, max_unacked_bytes=size)
    )


def ack(*sequences: int) -> eventing_pb2.StreamControl:
    return eventing_pb2.StreamControl(ack=eventing_pb2.Acknowledge(sequences=sequences))


class Reader:
    """Reads one call; a read that has not finished is kept for the next look (cancelling a read
    would cancel the whole call)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._pending: asyncio.Future[Any] | None = None

    async def message(self, timeout: float = 5.0) -> eventing_pb2.StreamMessage | None:
        """The next message, or None at the end of the stream; TimeoutError if none comes."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.call.read())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        read, self._pending = self._pending.result(), None
        return None if read is grpc.aio.EOF else read

    async def events(self, count: int) -> list[eventing_pb2.Event]:
        events: list[eventing_pb2.Event] = []
        while len(events) < count:
            message = await self.message()
            assert message is not None and message.HasField("event"), message
            events.extend(message.event.batch or (message.event,))
        return events

    async def nothing_more(self, wait: float = 0.3) -> bool:
        """True when no message arrives within ``wait`` seconds (the writer is held back)."""
        try:
            await self.message(timeout=wait)
        except TimeoutError:
            return True
        return False

    async def until_end(self) -> eventing_pb2.StreamEnd:
        while (message := await self.message()) is not None and message.HasField("event"):
            pass
        assert message is not None and message.HasField("end"), message
        return message.end


def open_stream(stub: EventingAsyncStub) -> tuple[Any, Reader]:
    call = stub.StreamEventSource()
    return call, Reader(call)


async def test_at_most_the_window_is_unacknowledged_and_each_acknowledgement_lets_one_more_through(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("w", "count: 0\nevery: 0.001", events=5))
    events = await reader.events(5)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert await reader.nothing_more(), "a sixth event before any acknowledgement"
    await call.write(ack(2, 4))  # out of order is fine
    assert [e.sequence for e in await reader.events(1)] == [6]
    assert [e.sequence for e in await reader.events(1)] == [7]
    assert await reader.nothing_more()
    await call.write(ack(2, 4, 999))  # repeated and unknown sequences release nothing
    assert await reader.nothing_more()
    call.cancel()


async def test_the_window_counts_bytes_too_and_a_large_event_still_passes_alone(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("b", "count: 0\nevery: 0.001", events=1000, size=1))
    first = await reader.events(1)
    assert first[0].ByteSize() > 1, "one event over the byte bound goes when nothing is outstanding"
    assert await reader.nothing_more()
    await call.write(ack(first[0].sequence))
    assert len(await reader.events(1)) == 1
    call.cancel()


async def test_a_drain_ends_the_stream_with_stream_end_and_ok_once_the_client_half_closes(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("d", "count: 0\nevery: 0.01"))
    await reader.events(2)
    drain = eventing_pb2.Drain(reason=eventing_pb2.STOP_REASON_REMOVED)
    await call.write(eventing_pb2.StreamControl(drain=drain))
    assert (await reader.until_end()).reason == "event source drained"
    await call.done_writing()
    assert await reader.message() is None
    assert await call.code() is grpc.StatusCode.OK
    assert "d" in JOURNAL.stopped


async def test_a_half_close_before_the_end_stops_the_source(stub: EventingAsyncStub) -> None:
    call, reader = open_stream(stub)
    await call.write(start("h", "count: 0\nevery: 0.01"))
    await reader.events(1)
    await call.done_writing()  # no acknowledgement can follow
    assert (await reader.until_end()).reason == "event source stopped"
    assert await reader.message() is None
    assert await call.code() is grpc.StatusCode.OK


async def test_a_first_message_without_start_is_refused(stub: EventingAsyncStub) -> None:
    call, reader = open_stream(stub)
    await call.write(ack(1))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await reader.message()
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "start" in (failed.value.details() or "")


async def test_an_invalid_source_ends_invalid_argument_as_on_start_event_source(
    stub: EventingAsyncStub,
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("bad", "count: -1"))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await reader.message()
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_server_shutdown_writes_what_is_held_then_ends_unavailable(
    server: GatewayServer, stub: EventingAsyncStub
) -> None:
    call, reader = open_stream(stub)
    await call.write(start("s", "count: 0\nevery: 0.01"))
    await reader.events(1)
    stopping = asyncio.ensure_future(server.stop(grace=5.0))
    assert (await reader.until_end()).reason == "gateway server is shutting down"
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await reader.message()
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    await stopping


async def test_controls_a_server_does_not_know_are_ignored(stub: EventingAsyncStub) -> None:
    call, reader = open_stream(stub)
    await call.write(start("u", "count: 0\nevery: 0.001", events=2))
    await reader.events(2)
    await call.write(eventing_pb2.StreamControl())  # no control set: a newer client's message
    await call.write(ack(1))
    assert len(await reader.events(1)) == 1
    call.cancel()


async def test_a_storm_of_repeated_controls_is_logged_once_and_ends_the_stream_once(
    stub: EventingAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call, reader = open_stream(stub)
    await call.write(start("storm", "count: 0\nevery: 0.01"))
    await reader.events(1)
    drain = eventing_pb2.StreamControl(drain=eventing_pb2.Drain(reason=eventing_pb2.STOP_REASON_SHUTDOWN))
    for _ in range(200):
        await call.write(drain)
        await call.write(start("storm", "count: 1"))
    assert (await reader.until_end()).reason == "event source drained"
    await call.done_writing()
    assert await reader.message() is None
    said = [r.getMessage() for r in caplog.records if r.name == "common.server.servicer"]
    assert sum("asks to drain" in m for m in said) == 1
    assert sum("second start" in m for m in said) <= 1
