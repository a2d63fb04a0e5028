"""The paced garbage collector: young passes on a clock, frozen long-lived state, cycles still reclaimed.

These run CPython's real collector; only the clock that decides which pass is due is injected.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import grpc
import pytest

from common import collector
from common.collector import PacedCollector, Pass
from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.settings import CollectorSettings, ServerSettings, SettingsError
from tests.kinds import TICK


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """A container that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def paced() -> Iterator[tuple[PacedCollector, Clock]]:
    clock = Clock()
    collector.take_over()
    try:
        yield PacedCollector(CollectorSettings(settle=1.0, full_interval=60.0), clock=clock), clock
    finally:
        collector.hand_back()


def test_automatic_collection_is_off_while_a_paced_collector_runs_and_back_after() -> None:
    collector.take_over()
    collector.take_over()
    assert not gc.isenabled()
    gc.freeze()
    collector.hand_back()
    assert not gc.isenabled(), "a second holder still paces collection"
    assert gc.get_freeze_count() > 0
    collector.hand_back()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_handing_back_leaves_collection_off_when_it_was_off_before() -> None:
    gc.disable()
    try:
        collector.take_over()
        collector.hand_back()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_tick_with_nothing_due_is_a_young_pass_that_reclaims_a_fresh_cycle(
    paced: tuple[PacedCollector, Clock],
) -> None:
    pacer, _ = paced
    dead = make_cycle()
    assert dead() is not None, "automatic collection is off, so only the pass can reclaim it"
    assert pacer.tick() is Pass.YOUNG
    assert dead() is None


def test_starts_settle_into_a_freeze_of_what_is_alive(paced: tuple[PacedCollector, Clock]) -> None:
    pacer, clock = paced
    pacer.source_started()
    clock.now += 0.5
    assert pacer.tick() is Pass.YOUNG, "starts have not settled yet"
    clock.now += 0.5
    assert pacer.tick() is Pass.SETTLE
    assert gc.get_freeze_count() > 0
    assert pacer.tick() is Pass.YOUNG, "one freeze per settled burst of starts"


def test_a_full_pass_comes_every_full_interval(paced: tuple[PacedCollector, Clock]) -> None:
    pacer, clock = paced
    clock.now += 59.9
    assert pacer.tick() is Pass.YOUNG
    clock.now += 0.1
    assert pacer.tick() is Pass.FULL
    assert pacer.tick() is Pass.YOUNG
    assert pacer.passes == {Pass.YOUNG: 2, Pass.FULL: 1}


def test_a_cycle_frozen_while_alive_is_reclaimed_by_the_deep_pass_after_a_source_ends(
    paced: tuple[PacedCollector, Clock],
) -> None:
    pacer, clock = paced
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    pacer.source_started()
    clock.now += 1.0
    assert pacer.tick() is Pass.SETTLE  # the cycle is alive, so it is frozen
    del a, b
    clock.now += 60.0
    assert pacer.tick() is Pass.FULL
    assert ref() is not None, "a full pass leaves frozen objects alone"
    pacer.source_ended()
    clock.now += 1.0
    assert pacer.tick() is Pass.DEEP
    assert ref() is None


def test_a_source_that_keeps_restarting_gets_at_most_one_deep_pass_per_full_interval(
    paced: tuple[PacedCollector, Clock],
) -> None:
    pacer, clock = paced
    clock.now += 60.0
    kinds = []
    for _ in range(5):  # ends and restarts every 5 s, each time settling
        pacer.source_ended()
        pacer.source_started()
        clock.now += 1.0
        kinds.append(pacer.tick())
        clock.now += 4.0
    assert kinds == [Pass.DEEP, Pass.SETTLE, Pass.SETTLE, Pass.SETTLE, Pass.SETTLE]
    clock.now += 40.0  # the restarts stopped; nothing starts or ends any more
    assert pacer.tick() is Pass.DEEP, "what the restarts left is reclaimed once the interval has passed"
    assert pacer.tick() is Pass.YOUNG


def test_a_deep_pass_comes_every_deep_interval_while_anything_is_frozen(
    paced: tuple[PacedCollector, Clock],
) -> None:
    pacer, clock = paced
    assert [pacer.tick() for _ in range(3)] == [Pass.YOUNG] * 3
    clock.now += 600.0
    assert pacer.tick() is Pass.FULL, "nothing frozen yet: no deep pass needed"
    pacer.source_started()
    clock.now += 1.0
    assert pacer.tick() is Pass.SETTLE
    clock.now += 599.0
    assert pacer.tick() is Pass.FULL
    clock.now += 1.0
    assert pacer.tick() is Pass.DEEP


def test_an_unknown_policy_is_a_settings_error_naming_it() -> None:
    with pytest.raises(SettingsError, match="'lazy'"):
        CollectorSettings(policy="lazy")


async def test_a_server_paces_collection_while_serving_and_its_sources_drive_the_freezes() -> None:
    gc_settings = CollectorSettings(young_interval=60.0, settle=0.0, full_interval=0.0)
    settings = ServerSettings(port=0, gc=gc_settings)
    server = GatewayServer(TICK, settings)
    await server.start()
    try:
        assert not gc.isenabled()
        assert server.collector is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = eventing_stub(channel).StartEventSource(
                eventing_pb2.EventSource(name="one", data="every: 0.01", version="v0.10")
            )
            await call.read()  # the source runs
            assert server.collector.tick() is Pass.SETTLE
            call.cancel()
            await server.servicer.wait_idle()
        assert server.collector.tick() is Pass.DEEP
    finally:
        await server.stop()
    assert gc.isenabled()
    assert server.collector is None


async def test_the_python_policy_leaves_collection_alone() -> None:
    server = GatewayServer(TICK, ServerSettings(port=0, gc=CollectorSettings(policy="python")))
    await server.start()
    try:
        assert gc.isenabled()
        assert server.collector is None
    finally:
        await server.stop()


async def test_holders_in_one_process_share_one_collector_until_the_last_lets_go() -> None:
    first = collector.acquire(CollectorSettings(young_interval=60.0))
    second = collector.acquire(CollectorSettings(young_interval=0.01))
    try:
        assert second is first, "one interpreter, one collector: the first holder's settings"
        assert first.settings.young_interval == 60.0
        await collector.release()
        assert not gc.isenabled(), "the second holder still paces collection"
    finally:
        await collector.release()
    assert gc.isenabled()
    third = collector.acquire(CollectorSettings())
    try:
        assert third is not first, "a fresh collector after the last release"
    finally:
        await collector.release()
