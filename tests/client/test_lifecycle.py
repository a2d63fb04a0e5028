"""The source lifecycle against a real gateway server (the test kind): diff, restart, status."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from common.client.lifecycle import Lifecycle
from common.client.metrics import REGISTRY
from common.client.model import Receipt, ReceivedEvent
from common.client.status import Phase, StatusBoard
from common.client.stream import UnackedBound
from common.collector import PacedCollector, Pass
from common.configmap import EventSourceSpec
from common.retry import Backoff
from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.settings import CollectorSettings, ServerSettings
from tests.harness.processes import free_port
from tests.kinds import JOURNAL, TICK


class Collected:
    def __init__(self) -> None:
        self.by_source: dict[str, list[bytes]] = defaultdict(list)
        self.arrived = asyncio.Event()

    async def sink(self, received: ReceivedEvent) -> None:
        self.by_source[received.source].append(received.event.payload)
        self.arrived.set()

    async def until(self, source: str, count: int) -> list[bytes]:
        async with asyncio.timeout(10):
            while len(self.by_source[source]) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.by_source[source]


def spec(name: str, data: str) -> EventSourceSpec:
    return EventSourceSpec(name, data)


@pytest.fixture
async def rig(server: GatewayServer) -> AsyncIterator[tuple[Lifecycle, StatusBoard, Collected]]:
    status, collected = StatusBoard(), Collected()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(
            eventing_stub(channel), status, collected.sink, backoff=Backoff(0.01, 1, 0, cap=0.05)
        )
        yield lifecycle, status, collected
        await lifecycle.close()


def phase(name: str, wanted: Phase):
    return lambda board: name in board.nodes and board.nodes[name].phase is wanted


async def test_every_source_streams_its_events_in_order(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("a", "count: 0\nevery: 0.005"), spec("b", "count: 0\nevery: 0.005")])
    assert await got.until("a", 20) == [f"a-{i}".encode() for i in range(len(got.by_source["a"]))]
    assert (await got.until("b", 20))[:20] == [f"b-{i}".encode() for i in range(20)]
    await status.wait_for(phase("a", Phase.RUNNING))
    assert status.server_connected


async def test_a_burst_that_arrives_in_batches_reaches_the_sink_event_by_event_in_order(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("burst", "count: 300\nburst: true")])
    assert await got.until("burst", 300) == [f"burst-{i}".encode() for i in range(300)]
    assert status.nodes["burst"].events == 300


async def test_events_read_but_not_yet_queued_when_a_source_stops_are_counted_as_dropped(
    server: GatewayServer,
) -> None:
    handed: list[bytes] = []
    first, never = asyncio.Event(), asyncio.Event()

    async def stuck_sink(received: ReceivedEvent) -> None:
        if handed:
            await never.wait()  # a subscriber queue that stays full
        handed.append(received.event.payload)
        first.set()

    def count(name: str) -> float:
        labels = {"source": "stuck"} | ({"subscriber": "", "reason": "shutdown"} if "dropped" in name else {})
        return REGISTRY.get_sample_value(name, labels) or 0.0

    dropped, received = count("gateway_events_dropped_total"), count("gateway_events_received_total")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(
            eventing_stub(channel), StatusBoard(), stuck_sink, backoff=Backoff(0.01, 1, 0), drain_timeout=0.2
        )
        await lifecycle.apply([spec("stuck", "count: 40\nburst: true")])
        await first.wait()
        await lifecycle.apply([])  # the source is removed while its sink is stuck mid-batch
        await lifecycle.close()
    read = count("gateway_events_received_total") - received
    assert handed == [b"stuck-0"]
    assert read >= 2, "the first message carried a batch"
    assert count("gateway_events_dropped_total") - dropped == read - 1


async def test_running_sources_drive_the_paced_collectors_freezes_in_the_client_too(
    server: GatewayServer,
) -> None:
    pacer = PacedCollector(CollectorSettings(settle=0.0, full_interval=0.0))
    got = Collected()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(eventing_stub(channel), StatusBoard(), got.sink, collector=pacer)
        assert pacer.tick() is Pass.FULL, "no source yet: nothing to freeze"
        await lifecycle.apply([spec("a", "count: 0\nevery: 0.01")])
        await got.until("a", 1)
        assert pacer.tick() is Pass.SETTLE
        await lifecycle.apply([])
        assert pacer.tick() is Pass.DEEP, "an ended stream's leftovers are reclaimed"
        await lifecycle.close()
    gc.unfreeze()


async def test_a_change_restarts_only_the_changed_source_and_leaves_the_others_untouched(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, _, got = rig
    await lifecycle.apply([spec("keep", "count: 0\nevery: 0.005"), spec("edit", "count: 0\nevery: 0.005")])
    await got.until("keep", 5)
    await got.until("edit", 5)
    await lifecycle.apply([spec("keep", "count: 0\nevery: 0.005"), spec("edit", "count: 0\nevery: 0.004")])
    await lifecycle.apply([spec("keep", "count: 0\nevery: 0.005"), spec("edit", "count: 0\nevery: 0.004")])
    seen = len(got.by_source["keep"])
    kept = await got.until("keep", seen + 20)
    assert kept == [f"keep-{i}".encode() for i in range(len(kept))], "no gap, no restart: numbering runs on"
    assert JOURNAL.started.count("keep") == 1
    assert JOURNAL.started.count("edit") == 2
    edited = got.by_source["edit"]
    assert edited.count(b"edit-0") == 2, "the edited source started again from its first event"


async def test_a_removed_source_is_stopped_and_its_node_deleted(
    server: GatewayServer, rig: tuple[Lifecycle, StatusBoard, Collected]
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("a", "count: 0\nevery: 0.01"), spec("gone", "count: 0\nevery: 0.01")])
    await got.until("gone", 2)
    await lifecycle.apply([spec("a", "count: 0\nevery: 0.01")])
    assert "gone" not in status.nodes
    async with asyncio.timeout(5):
        while "gone" in server.servicer.running:
            await asyncio.sleep(0.01)  # the server notices the cancelled stream on its own loop turn
    assert "gone" in JOURNAL.stopped


async def test_an_invalid_source_is_reported_and_the_others_run(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("good", "count: 0\nevery: 0.01"), spec("bad", "end: explode")])
    await status.wait_for(phase("bad", Phase.ERROR))
    assert "end:" in status.nodes["bad"].message
    assert status.nodes["bad"].message.startswith("event source is not valid: end: ")
    assert status.nodes["bad"].message.count("invalid") + status.nodes["bad"].message.count("not valid") == 1
    await got.until("good", 5)
    assert "bad" not in JOURNAL.started


async def test_a_completed_source_stays_completed(rig: tuple[Lifecycle, StatusBoard, Collected]) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("once", "count: 3")])
    await status.wait_for(phase("once", Phase.COMPLETED))
    assert await got.until("once", 3) == [b"once-0", b"once-1", b"once-2"]
    assert JOURNAL.started.count("once") == 1


async def test_a_source_failing_for_good_stays_in_error_until_its_config_changes(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, _ = rig
    await lifecycle.apply([spec("f", "count: 1\nend: failed")])
    await status.wait_for(phase("f", Phase.ERROR))
    assert "the topic was deleted" in status.nodes["f"].message
    assert JOURNAL.started.count("f") == 1
    await lifecycle.apply([spec("f", "count: 1\nend: complete")])
    await status.wait_for(phase("f", Phase.COMPLETED))


async def test_a_source_that_faults_is_restarted_with_backoff(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("flaky", "count: 1\nend: unavailable")])
    await got.until("flaky", 3)
    assert JOURNAL.started.count("flaky") >= 3
    assert status.nodes["flaky"].restarts >= 2


async def test_the_client_waits_for_a_server_that_is_not_up_yet_and_resumes_after_a_restart() -> None:
    port = free_port()
    status, got = StatusBoard(), Collected()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        lifecycle = Lifecycle(
            eventing_stub(channel), status, got.sink, backoff=Backoff(0.02, 1.5, 0, cap=0.2)
        )
        await lifecycle.apply([spec("s", "count: 0\nevery: 0.01")])
        await status.wait_for(phase("s", Phase.ERROR))
        assert not status.server_connected
        server = GatewayServer(TICK, ServerSettings(port=port, grace_period=0.5))
        await server.start()
        await got.until("s", 3)
        assert status.server_connected
        await server.stop()  # the server goes away: sources end with UNAVAILABLE
        await status.wait_for(phase("s", Phase.ERROR))
        seen = len(got.by_source["s"])
        server = GatewayServer(TICK, ServerSettings(port=port, grace_period=0.5))
        await server.start()
        await got.until("s", seen + 3)
        await status.wait_for(phase("s", Phase.RUNNING))
        await lifecycle.close()
        await server.stop()


class Settling(Collected):
    """A sink that settles each event's receipt, as the subscribers do once they accepted it."""

    def __init__(self, *, settle: bool = True) -> None:
        super().__init__()
        self.settle = settle
        self.receipts: list[Receipt] = []

    async def sink(self, received: ReceivedEvent) -> None:
        assert received.receipt is not None
        self.receipts.append(received.receipt)
        if self.settle:
            received.receipt.settle()
        await super().sink(received)


async def test_acknowledged_events_keep_a_small_window_flowing(server: GatewayServer) -> None:
    got = Settling()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(eventing_stub(channel), StatusBoard(), got.sink, bound=UnackedBound(events=5))
        await lifecycle.apply([spec("flow", "count: 300\nburst: true")])
        assert await got.until("flow", 300) == [f"flow-{i}".encode() for i in range(300)]
        assert lifecycle.held == 0
        await lifecycle.close()


async def test_events_no_subscriber_is_done_with_hold_the_window_shut_until_they_are(
    server: GatewayServer,
) -> None:
    got = Settling(settle=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(eventing_stub(channel), StatusBoard(), got.sink, bound=UnackedBound(events=5))
        await lifecycle.apply([spec("shut", "count: 50\nburst: true")])
        await got.until("shut", 5)
        await asyncio.sleep(0.3)  # time for events the window should hold back; none may come
        assert len(got.by_source["shut"]) == 5 and lifecycle.held == 5
        for receipt in got.receipts:
            receipt.settle()
        await got.until("shut", 10)
        for receipt in got.receipts[5:]:
            receipt.abandon()  # given up at shutdown: no acknowledgement, so no more room
        await asyncio.sleep(0.3)  # as above
        assert len(got.by_source["shut"]) == 10 and lifecycle.held == 0
        await lifecycle.close()


async def _v011_validate(request: Any, context: Any) -> eventing_pb2.ValidEventSource:
    return eventing_pb2.ValidEventSource(isValid=True)


async def _v011_start(request: Any, context: Any) -> AsyncIterator[eventing_pb2.Event]:
    for n in range(3):
        yield eventing_pb2.Event(name=request.name, payload=f"old-{n}".encode())
    await asyncio.Event().wait()  # a source that runs until cancelled


def v011_server() -> grpc.aio.Server:
    """A server with the v0.11 methods only, registered by hand: StreamEventSource is not there at all."""
    request, reply = eventing_pb2.EventSource.FromString, eventing_pb2.Event.SerializeToString
    handlers = {
        "StartEventSource": grpc.unary_stream_rpc_method_handler(_v011_start, request, reply),
        "ValidateEventSource": grpc.unary_unary_rpc_method_handler(
            _v011_validate, request, eventing_pb2.ValidEventSource.SerializeToString
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("gateways.Eventing", handlers),))
    return server


async def test_a_v0_11_server_is_streamed_over_start_event_source_after_its_unimplemented(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = v011_server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    got, status = Collected(), StatusBoard()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            lifecycle = Lifecycle(eventing_stub(channel), status, got.sink)
            await lifecycle.apply([spec("old", "x: 1")])
            assert await got.until("old", 3) == [b"old-0", b"old-1", b"old-2"]
            assert status.nodes["old"].restarts == 0, "the fallback is no restart"
            await lifecycle.close()
    finally:
        await server.stop(0)
    assert any("using StartEventSource" in r.getMessage() for r in caplog.records)


async def test_a_fault_in_the_clients_own_task_shows_as_error_and_the_source_is_restarted(
    server: GatewayServer,
) -> None:
    status, collected = StatusBoard(), Collected()
    failed = asyncio.Event()

    async def sink(received: ReceivedEvent) -> None:
        if not failed.is_set():
            failed.set()
            raise RecursionError("maximum recursion depth exceeded while encoding")
        await collected.sink(received)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        lifecycle = Lifecycle(eventing_stub(channel), status, sink, backoff=Backoff(0.3, 1, 0, cap=0.3))
        try:
            await lifecycle.apply([spec("fragile", "count: 0\nevery: 0.02")])
            await status.wait_for(phase("fragile", Phase.ERROR))
            assert "RecursionError" in status.nodes["fragile"].message
            await status.wait_for(phase("fragile", Phase.RUNNING))
            await collected.until("fragile", 3)
            assert status.nodes["fragile"].restarts >= 1
        finally:
            await lifecycle.close()


async def test_one_source_failing_unavailable_is_that_sources_error_not_the_servers(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    status.config(True, "loaded")
    said: list[bool] = []
    record = status.connected

    def connected(up: bool) -> None:
        said.append(up)
        record(up)

    status.connected = connected  # type: ignore[method-assign]
    await lifecycle.apply(
        [spec("flaky", "count: 1\nend: unavailable"), spec("steady", "count: 0\nevery: 0.02")]
    )
    await got.until("flaky", 3)
    await got.until("steady", 3)
    assert status.nodes["flaky"].restarts >= 2
    assert False not in said, "a source's UNAVAILABLE never marks the server unreachable"
    assert status.server_connected and status.ready
    assert status.nodes["steady"].phase is Phase.RUNNING


async def test_a_sources_lost_connection_shows_as_error_with_the_stream_open_and_running_again_after(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, got = rig
    await lifecycle.apply([spec("flap", "count: 0\nevery: 0.05\ndisconnect_at: 2\ndown_for: 0.5")])
    await status.wait_for(phase("flap", Phase.ERROR))
    assert status.nodes["flap"].message == "disconnected, stream open: the broker closed the connection"
    assert REGISTRY.get_sample_value("gateway_source_connected", {"source": "flap"}) == 0
    await status.wait_for(phase("flap", Phase.RUNNING))
    assert status.nodes["flap"].message == "event source is running (reconnected 1 time(s))"
    assert REGISTRY.get_sample_value("gateway_source_connected", {"source": "flap"}) == 1
    assert status.nodes["flap"].restarts == 0, "the stream stayed open"
    await got.until("flap", 5)


async def test_a_stream_that_ends_says_it_is_restarting(
    rig: tuple[Lifecycle, StatusBoard, Collected],
) -> None:
    lifecycle, status, _ = rig
    await lifecycle.apply([spec("gone", "count: 1\nend: unavailable")])
    await status.wait_for(
        lambda board: "gone" in board.nodes and board.nodes["gone"].message.startswith("stream")
    )
    assert status.nodes["gone"].message.startswith("stream ended, restarting: UNAVAILABLE: ")
