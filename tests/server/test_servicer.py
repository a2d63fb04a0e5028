"""The Eventing servicer over real gRPC: validation, streaming, and how a stream ends."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from common.events import SourceEvent
from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.server.session import MAX_GROUP_BYTES, group_end
from tests.kinds import JOURNAL

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def source(name: str, data: str, version: str = "v0.10") -> eventing_pb2.EventSource:
    return eventing_pb2.EventSource(id="1", name=name, data=data, version=version)


async def collect(stub: EventingAsyncStub, es: eventing_pb2.EventSource) -> list[eventing_pb2.Event]:
    return [event async for event in stub.StartEventSource(es)]


async def test_a_valid_source_is_reported_valid(stub: EventingAsyncStub) -> None:
    verdict = await stub.ValidateEventSource(source("a", "count: 3"))
    assert verdict.isValid and verdict.reason == ""


async def test_an_invalid_source_names_every_bad_field(stub: EventingAsyncStub) -> None:
    verdict = await stub.ValidateEventSource(source("bad", "count: -1\nend: explode"))
    assert not verdict.isValid
    assert "'bad'" in verdict.reason and "count:" in verdict.reason and "end:" in verdict.reason


@pytest.mark.parametrize("version", ["", "v0.9", "v0.12", "0.10"])
async def test_a_foreign_version_is_invalid_and_the_reason_names_it(
    stub: EventingAsyncStub, version: str
) -> None:
    verdict = await stub.ValidateEventSource(source("a", "count: 1", version))
    assert not verdict.isValid
    assert "version:" in verdict.reason and "v0.10" in verdict.reason


async def test_version_v0_11_is_accepted_with_a_warning(
    stub: EventingAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    verdict = await stub.ValidateEventSource(source("a", "count: 1", "v0.11"))
    assert verdict.isValid
    assert any("v0.11" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


async def test_a_completed_source_streams_all_its_events_in_order_and_ends_ok(
    stub: EventingAsyncStub,
) -> None:
    events = await collect(stub, source("a", "count: 20"))
    assert [e.payload for e in events] == [f"a-{i}".encode() for i in range(20)]
    assert [e.id for e in events] == [f"a:{i}" for i in range(20)]
    assert {e.name for e in events} == {"a"} and {e.content_type for e in events} == {"text/plain"}


async def test_starting_an_invalid_source_ends_with_invalid_argument(
    stub: EventingAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(stub, source("bad", "end: explode"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "end:" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("end", "code", "words"),
    [
        ("unavailable", grpc.StatusCode.UNAVAILABLE, "the broker went away"),
        ("failed", grpc.StatusCode.INVALID_ARGUMENT, "the topic was deleted"),
        ("crash", grpc.StatusCode.INTERNAL, "boom"),
    ],
)
async def test_a_source_that_fails_ends_its_stream_with_the_status_of_its_fault(
    stub: EventingAsyncStub, end: str, code: grpc.StatusCode, words: str
) -> None:
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for event in stub.StartEventSource(source("f", f"count: 2\nend: {end}")):
            received.append(event.payload)
    assert received == [b"f-0", b"f-1"], "events before the fault are delivered"
    assert err.value.code() is code
    assert words in (err.value.details() or "")


async def test_cancelling_the_stream_stops_the_source(server: GatewayServer, stub: EventingAsyncStub) -> None:
    call = stub.StartEventSource(source("endless", "count: 0\nevery: 0.01"))
    first = await call.read()
    assert isinstance(first, eventing_pb2.Event) and first.payload == b"endless-0"
    assert server.servicer.running.keys() == {"endless"}
    call.cancel()
    async with asyncio.timeout(5):
        await server.servicer.wait_idle()
    assert JOURNAL.started == ["endless"] and JOURNAL.stopped == ["endless"]
    assert server.servicer.running == {}


async def test_an_invalid_source_does_not_disturb_a_running_one(stub: EventingAsyncStub) -> None:
    call = stub.StartEventSource(source("good", "count: 0\nevery: 0.01"))
    assert await call.read() == eventing_pb2.Event(
        name="good", payload=b"good-0", id="good:0", content_type="text/plain"
    )
    for bad in ("end: explode", "count: x", "[unclosed"):
        assert not (await stub.ValidateEventSource(source("bad", bad))).isValid
        with pytest.raises(grpc.aio.AioRpcError):
            await collect(stub, source("bad", bad))
    events = [await call.read() for _ in range(3)]
    assert [e.payload for e in events if isinstance(e, eventing_pb2.Event)] == [
        b"good-1",
        b"good-2",
        b"good-3",
    ]
    call.cancel()


async def test_a_source_that_clashes_with_a_running_one_is_refused_naming_both(
    server: GatewayServer, stub: EventingAsyncStub
) -> None:
    call = stub.StartEventSource(source("first", "count: 0\nevery: 0.05\nport: 12000"))
    await call.read()
    verdict = await stub.ValidateEventSource(source("second", "port: 12000"))
    assert not verdict.isValid and "'first'" in verdict.reason and "'second'" in verdict.reason
    # The running source itself may be re-validated (the client does so before a restart).
    assert (await stub.ValidateEventSource(source("first", "port: 12000"))).isValid
    call.cancel()
    async with asyncio.timeout(5):
        await server.servicer.wait_idle()
    assert (await stub.ValidateEventSource(source("second", "port: 12000"))).isValid


async def test_shutdown_ends_running_streams_with_unavailable_so_clients_retry(
    server: GatewayServer, stub: EventingAsyncStub
) -> None:
    call = stub.StartEventSource(source("s", "count: 0\nevery: 0.01"))
    await call.read()
    await server.stop(grace=2.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert JOURNAL.stopped == ["s"]


async def test_the_health_service_reports_serving(server: GatewayServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gateways.Eventing"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_second_server_cannot_silently_share_the_port(server: GatewayServer) -> None:
    from common.settings import ServerSettings, SettingsError
    from tests.kinds import TICK

    twin = GatewayServer(TICK, ServerSettings(port=server.port))
    with pytest.raises(SettingsError, match=str(server.port)):
        await twin.start()


async def test_an_event_is_marked_written_once_sent_and_failed_if_the_stream_ends_first() -> None:
    from common.events import NotWritten, SourceEvent
    from common.kinds import GatewayKind, SourceContext
    from common.settings import ServerSettings

    futures: list[asyncio.Future[None]] = []
    big = b"x" * 1_000_000  # 40 MB in all: more than any gRPC flow-control window, so writes stall

    async def run(ctx: SourceContext, config: None):
        for _ in range(40):
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            futures.append(written)
            yield SourceEvent(payload=big, written=written)
        await asyncio.Event().wait()

    kind: GatewayKind[None] = GatewayKind(name="w", parse=lambda data: None, run=run)
    server = GatewayServer(kind, ServerSettings(port=0, stream_buffer=8))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = eventing_stub(channel).StartEventSource(source("w", ""))
            first = await call.read()
            assert isinstance(first, eventing_pb2.Event)
            async with asyncio.timeout(5):
                await futures[0]
            assert not futures[-1].done(), "the last event is still waiting behind flow control"
            call.cancel()
            async with asyncio.timeout(5):
                await server.servicer.wait_idle()
        outcomes = [f.exception() if f.done() else "pending" for f in futures]
        assert outcomes[0] is None
        assert isinstance(outcomes[-1], NotWritten), outcomes
        assert "pending" not in outcomes, "every event's caller learns what became of it"
    finally:
        await server.stop()


async def test_a_cancel_racing_a_shutdown_still_ends_the_session(caplog: pytest.LogCaptureFixture) -> None:
    from common.settings import ServerSettings
    from tests.kinds import TICK

    for _ in range(10):
        server = GatewayServer(TICK, ServerSettings(port=0, grace_period=3.0))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = eventing_stub(channel).StartEventSource(source("r", "count: 0\nevery: 0.001"))
            await call.read()
            call.cancel()
        async with asyncio.timeout(2.5):  # well inside the grace period: nothing is left to wait out
            await server.stop()
    assert not [r for r in caplog.records if "still running" in r.getMessage()]


async def test_a_client_that_reads_batches_gets_events_ready_together_in_one_message_in_order(
    stub: EventingAsyncStub,
) -> None:
    request = source("b", "count: 40\nburst: true")
    request.batches = True
    messages = await collect(stub, request)
    assert any(len(m.batch) > 1 for m in messages), "a burst travels in batches"
    assert all(not m.payload and not m.name for m in messages if m.batch), "a batch's own fields are unset"
    events = [e for m in messages for e in (m.batch or [m])]
    assert [e.payload for e in events] == [f"b-{i}".encode() for i in range(40)]
    assert {e.name for e in events} == {"b"}


async def test_a_v0_11_client_that_does_not_ask_for_batches_gets_one_event_per_message(
    stub: EventingAsyncStub,
) -> None:
    messages = await collect(stub, source("b", "count: 40\nburst: true"))
    assert not any(m.batch for m in messages)
    assert [m.payload for m in messages] == [f"b-{i}".encode() for i in range(40)]


def test_a_group_stops_at_its_event_limit_and_its_byte_limit_and_a_large_event_travels_alone() -> None:
    def events(*sizes: int) -> list[int]:
        return [SourceEvent(payload=b"x" * size).to_proto("s").ByteSize() for size in sizes]

    assert group_end(events(1, 1, 1, 1, 1), 0, 3) == 3
    assert group_end(events(1, 1, 1, 1, 1), 3, 3) == 5
    assert group_end(events(1, 1, 1), 0, 1) == 1, "a limit of one never groups"
    half = MAX_GROUP_BYTES // 2
    assert group_end(events(half, half, 1), 0, 64) == 1, "two halves and their framing are over the limit"
    assert group_end(events(half - 100, half - 100, 1), 0, 64) == 3
    assert group_end(events(MAX_GROUP_BYTES * 2, 1), 0, 64) == 1
    assert group_end(events(1, MAX_GROUP_BYTES * 2), 0, 64) == 1


def test_a_groups_size_counts_extensions_and_metadata_not_only_payloads() -> None:
    headers = "h" * (MAX_GROUP_BYTES // 4)  # a request's headers, say, carried as an extension
    events = [SourceEvent(payload=b"", extensions={"headers": headers}).to_proto("s") for _ in range(8)]
    assert group_end([event.ByteSize() for event in events], 0, 64) == 3
