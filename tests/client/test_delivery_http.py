"""HTTP delivery against a real aiohttp server on 127.0.0.1 whose answers each test programs."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from common.client.delivery import DeliverySettings, Fanout, Subscriber
from common.client.delivery import settings as settings_module
from common.client.delivery.http import parse_retry_after
from common.client.model import Format, Message, ReceivedEvent
from common.client.subscribers import parse_subscriber
from common.errors import ConfigError
from common.rpc import eventing_pb2
from tests.client.delivery_rig import FAST, Arrival, Sink, message, sample, serving, subscriber
from tests.harness.processes import free_port, wait_until


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with serving() as running:
        yield running


async def test_each_source_arrives_in_order_while_sources_are_delivered_concurrently(sink: Sink) -> None:
    sources = ["alpha", "beta", "gamma"]
    async with subscriber(sink.url) as sub:
        before = {
            s: sample("gateway_events_delivered_total", source=s, subscriber=sub.display) for s in sources
        }

        async def produce(source: str) -> None:
            for n in range(30):
                await sub.put(message(source, n))

        await asyncio.gather(*(produce(s) for s in sources))
        await sink.wait_for(90)
    for source in sources:
        assert sink.ids(source) == [f"{source}-{n}" for n in range(30)]
        after = sample("gateway_events_delivered_total", source=source, subscriber=sub.display)
        assert after - before[source] == 30
    assert sub.status()["delivered"] == 90


async def test_events_put_while_the_subscriber_is_down_all_arrive_in_order_once_it_is_up() -> None:
    port = free_port()
    async with subscriber(f"http://127.0.0.1:{port}/events") as sub:
        for n in range(10):
            await sub.put(message("src", n))
        await wait_until(
            lambda: sub.status()["retried"] >= 2, what="delivery fails while the subscriber is down"
        )
        down = sub.status()
        assert not down["connected"]
        assert down["last_error"] is not None and "request failed" in down["last_error"]
        assert down["queued"] == 10
        async with serving(port) as sink:
            await sink.wait_for(10)
            await wait_until(lambda: sub.status()["queued"] == 0, what="every event settled")
            assert sink.ids() == [f"src-{n}" for n in range(10)]
            status = sub.status()
            assert (status["connected"], status["last_error"], status["delivered"]) == (True, None, 10)


async def test_a_503_with_retry_after_is_retried_no_sooner_than_the_server_asked(sink: Sink) -> None:
    async def unavailable_once(arrival: Arrival) -> web.Response:
        if len(sink.arrivals) == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.Response(status=204)

    sink.respond = unavailable_once
    async with subscriber(sink.url) as sub:
        retries = sample("gateway_delivery_retries_total", source="src", subscriber=sub.display)
        await sub.put(message("src", 0))
        await sink.wait_for(2)
    first, second = sink.arrivals
    assert first.event_id == second.event_id == "src-0"
    assert second.at - first.at >= 0.95
    assert sample("gateway_delivery_retries_total", source="src", subscriber=sub.display) == retries + 1
    assert sub.status()["delivered"] == 1


async def test_a_400_is_dropped_as_rejected_without_retry_and_later_events_still_arrive(sink: Sink) -> None:
    async def reject_one(arrival: Arrival) -> web.Response:
        if arrival.event_id == "src-1":
            return web.Response(status=400, text="event is from unknown source")
        return web.Response(status=200)

    sink.respond = reject_one
    async with subscriber(sink.url) as sub:
        labels = {"source": "src", "subscriber": sub.display}
        dropped = sample("gateway_events_dropped_total", reason="rejected", **labels)
        retries = sample("gateway_delivery_retries_total", **labels)
        for n in range(3):
            await sub.put(message("src", n))
        await sink.wait_for(3)
    assert sink.ids() == ["src-0", "src-1", "src-2"]
    assert sample("gateway_events_dropped_total", reason="rejected", **labels) == dropped + 1
    assert sample("gateway_delivery_retries_total", **labels) == retries
    status = sub.status()
    assert (status["delivered"], status["dropped"]) == (2, {"rejected": 1})
    assert status["last_error"] is None


async def test_an_event_with_a_header_http_cannot_carry_is_dropped_as_rejected_and_the_next_arrives(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    async with subscriber(sink.url) as sub:
        labels = {"source": "src", "subscriber": sub.display}
        dropped = sample("gateway_events_dropped_total", reason="rejected", **labels)
        sound = message("src", 1)
        broken = dataclasses.replace(sound, headers={**sound.headers, "ce-note": "a\r\nce-id: forged"})
        for one in (message("src", 0), broken, message("src", 2)):
            await sub.put(one)
        await sink.wait_for(2)
        await wait_until(lambda: sub.status()["dropped"] == {"rejected": 1}, what="the drop")
    assert sink.ids() == ["src-0", "src-2"]
    assert sample("gateway_events_dropped_total", reason="rejected", **labels) == dropped + 1
    assert any("header 'ce-note'" in r.getMessage() and "src-1" in r.getMessage() for r in caplog.records)


async def test_a_batch_failing_midway_resumes_at_the_failed_event_so_none_is_sent_twice(sink: Sink) -> None:
    async def unavailable_at_src_3_once(arrival: Arrival) -> web.Response:
        if arrival.event_id == "src-3" and sink.ids().count("src-3") == 1:
            return web.Response(status=503)
        return web.Response(status=200)

    sink.respond = unavailable_at_src_3_once
    sink.gate.clear()
    async with subscriber(sink.url) as sub:
        retries = sample("gateway_delivery_retries_total", source="src", subscriber=sub.display)
        await sub.put(message("src", 0))
        await sink.wait_for(1)  # src-0 is in flight alone, so src-1..src-5 are taken as one batch
        for n in range(1, 6):
            await sub.put(message("src", n))
        sink.gate.set()
        await sink.wait_for(7)
    assert sink.ids() == ["src-0", "src-1", "src-2", "src-3", "src-3", "src-4", "src-5"]
    assert sample("gateway_delivery_retries_total", source="src", subscriber=sub.display) == retries + 1
    assert (sub.status()["delivered"], sub.status()["dropped"]) == (6, {})


async def test_with_inflight_a_source_has_that_many_deliveries_at_once_and_each_arrives_once(
    sink: Sink,
) -> None:
    sink.gate.clear()
    async with subscriber(f"{sink.url}?inflight=4") as sub:
        for n in range(10):
            await sub.put(message("src", n))
        await sink.wait_for(4)  # four are held by the sink at once
        assert len(sink.arrivals) == 4 and sub.status()["queued"] == 10
        sink.gate.set()
        await sink.wait_for(10)
    assert sorted(sink.ids(), key=lambda i: int(i.split("-")[1])) == [f"src-{n}" for n in range(10)]
    assert (sub.status()["delivered"], sub.status()["dropped"]) == (10, {})
    assert {a.target for a in sink.arrivals} == {"/events"}, "the URL's inflight is the client's, not sent"


async def test_with_inflight_a_failed_event_is_retried_on_its_own_while_the_others_go_on(
    sink: Sink,
) -> None:
    failed_once: set[str] = set()

    async def flaky(arrival: Arrival) -> web.Response:
        if arrival.event_id == "src-0" and arrival.event_id not in failed_once:
            failed_once.add(arrival.event_id)
            return web.Response(status=503)
        return web.Response(status=200)

    sink.respond = flaky
    async with subscriber(f"{sink.url}?inflight=2") as sub:
        for n in range(6):
            await sub.put(message("src", n))
        await sink.wait_for(7)
    assert sorted(sink.ids()) == sorted(["src-0", "src-0", *(f"src-{n}" for n in range(1, 6))])
    assert (sub.status()["delivered"], sub.status()["retried"], sub.status()["dropped"]) == (6, 1, {})


async def test_with_inflight_close_drops_and_counts_what_every_worker_still_held(sink: Sink) -> None:
    sink.gate.clear()
    async with subscriber(f"{sink.url}?inflight=3", grace=0.05) as sub:
        for n in range(5):
            await sub.put(message("src", n))
        await sink.wait_for(3)
    assert sub.status()["dropped"] == {"shutdown": 5}
    assert sub.status()["queued"] == 0


async def test_the_drop_policy_counts_the_events_it_drops_when_the_queue_is_full(sink: Sink) -> None:
    sink.gate.clear()
    settings = DeliverySettings(queue_size=2, when_full="drop", retry=FAST.retry)
    async with subscriber(sink.url, settings) as sub:
        dropped = sample(
            "gateway_events_dropped_total", source="src", subscriber=sub.display, reason="queue_full"
        )
        await sub.put(message("src", 0))
        await sink.wait_for(1)  # src-0 is in flight, held by the sink
        for n in range(1, 5):
            await sub.put(message("src", n))  # src-1 and src-2 fill the queue; src-3 and src-4 are dropped
        assert sub.status()["dropped"] == {"queue_full": 2}
        sink.gate.set()
        await sink.wait_for(3)
    assert sink.ids() == ["src-0", "src-1", "src-2"]
    assert (
        sample("gateway_events_dropped_total", source="src", subscriber=sub.display, reason="queue_full")
        == dropped + 2
    )


async def test_the_block_policy_holds_put_until_the_queue_has_room(sink: Sink) -> None:
    sink.gate.clear()
    settings = DeliverySettings(queue_size=2, when_full="block", retry=FAST.retry)
    async with subscriber(sink.url, settings) as sub:
        await sub.put(message("src", 0))
        await sink.wait_for(1)  # src-0 is in flight, held by the sink
        await sub.put(message("src", 1))
        await sub.put(message("src", 2))
        blocked = asyncio.create_task(sub.put(message("src", 3)), name="blocked put")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), 0.2)
        sink.gate.set()
        await asyncio.wait_for(blocked, 5.0)
        await sink.wait_for(4)
    assert sink.ids() == [f"src-{n}" for n in range(4)]
    assert sub.status()["dropped"] == {}


async def test_close_delivers_what_is_queued_within_the_grace_period(sink: Sink) -> None:
    async with subscriber(sink.url, grace=5.0) as sub:
        for n in range(20):
            await sub.put(message("src", n))
    assert sink.ids() == [f"src-{n}" for n in range(20)]
    assert (sub.status()["delivered"], sub.status()["dropped"]) == (20, {})


async def test_close_drops_and_counts_what_the_grace_period_could_not_deliver(sink: Sink) -> None:
    sink.gate.clear()
    async with subscriber(sink.url, grace=0.1) as sub:
        shutdown = sample(
            "gateway_events_dropped_total", source="src", subscriber=sub.display, reason="shutdown"
        )
        for n in range(3):
            await sub.put(message("src", n))
        await sink.wait_for(1)
    assert sub.status()["dropped"] == {"shutdown": 3}
    assert (
        sample("gateway_events_dropped_total", source="src", subscriber=sub.display, reason="shutdown")
        == shutdown + 3
    )
    await sub.put(message("src", 3))  # after close: dropped and counted, never queued
    assert sub.status()["dropped"] == {"shutdown": 4}


async def test_removing_a_source_drains_its_lane_and_stops_its_worker(sink: Sink) -> None:
    async with subscriber(sink.url) as sub:
        for n in range(5):
            await sub.put(message("gone", n))
        await sub.remove_source("gone", grace=5.0)
        assert sink.ids("gone") == [f"gone-{n}" for n in range(5)]
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("deliver 'gone'")]


async def test_fanout_encodes_once_per_format_and_queues_on_every_subscriber(sink: Sink) -> None:
    encoded: list[tuple[str, Format]] = []

    def encode(received: ReceivedEvent, fmt: Format) -> Message:
        encoded.append((received.event.id, fmt))
        return message(received.source, int(received.event.id), fmt=fmt)

    async with serving() as other:
        urls = [sink.url, other.url, f"{sink.url}?format=structured"]
        fanout = Fanout([Subscriber(parse_subscriber(u, Format.BINARY), FAST, gateway="gw") for u in urls])
        await fanout.start()
        try:
            for n in range(3):
                event = eventing_pb2.Event(id=str(n), name="src", payload=b"{}")
                await fanout.publish(ReceivedEvent("src", event, datetime.now(UTC)), encode)
        finally:
            await fanout.close(grace=5.0)
        assert other.ids() == ["src-0", "src-1", "src-2"]
    assert len(encoded) == 6 and {fmt for _, fmt in encoded} == {Format.BINARY, Format.STRUCTURED}
    assert sorted(sink.ids()) == sorted(["src-0", "src-1", "src-2"] * 2)
    assert [s["delivered"] for s in fanout.status()] == [3, 3, 3]


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", cap=60) == 7
    assert parse_retry_after("3600", cap=60) == 60
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), cap=60, now=now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), cap=60, now=now) == 0
    assert parse_retry_after("soon", cap=60) is None
    assert parse_retry_after(None, cap=60) is None


def test_every_delivery_setting_has_a_default_and_a_docstring() -> None:
    tree = ast.parse(Path(settings_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DeliverySettings")
    documented = {
        stmt.target.id
        for stmt, after in itertools.pairwise(cls.body)
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
    }
    fields = dataclasses.fields(DeliverySettings)
    assert documented == {f.name for f in fields}
    assert all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING for f in fields
    )
    assert DeliverySettings().retry.steps == 0  # the default retries forever


def test_bad_delivery_settings_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        DeliverySettings(queue_size=0, when_full="spill", request_timeout=0)  # type: ignore[arg-type]
    assert set(caught.value.problems) == {"queue_size", "when_full", "request_timeout"}


async def test_a_flood_of_drops_is_logged_as_one_line_then_a_summary_counting_every_drop(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sink.gate.clear()
    settings = DeliverySettings(queue_size=1, when_full="drop", retry=FAST.retry)
    async with subscriber(sink.url, settings, grace=0.05) as sub:
        await sub.put(message("src", 0))
        await sink.wait_for(1)
        for n in range(1, 502):
            await sub.put(message("src", n))  # src-1 fills the queue; the other 500 are dropped
        assert sub.status()["dropped"] == {"queue_full": 500}
    lines = [r.getMessage() for r in caplog.records if "queue_full" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Dropped 1 event(s)")
    assert lines[1] == f"Dropped 499 more event(s) for {sub.display} (queue_full) since the previous report."
