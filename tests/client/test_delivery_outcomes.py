"""Delivery outcomes event by event: counters as each is accepted, a delivery cut by the grace
counted once, receipts across subscribers and under the drop policy. Against a real aiohttp server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web

from common.client.delivery import Fanout, Subscriber
from common.client.model import Format, Message, ReceivedEvent
from common.client.subscribers import parse_subscriber
from common.rpc import eventing_pb2
from tests.client.delivery_rig import FAST, Arrival, Outcomes, Sink, message, sample, serving, subscriber
from tests.harness.processes import wait_until


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with serving() as running:
        yield running


async def test_each_event_counts_as_delivered_the_moment_the_subscriber_accepts_it(sink: Sink) -> None:
    tokens: asyncio.Queue[None] = asyncio.Queue()

    async def one_at_a_time(arrival: Arrival) -> web.Response:
        await tokens.get()
        return web.Response(status=200)

    sink.respond = one_at_a_time
    async with subscriber(sink.url) as sub:
        display = sub.display
        delivered = sample("gateway_events_delivered_total", source="slow", subscriber=display)
        observed = sample("gateway_delivery_latency_seconds_count", subscriber=display)
        depth = sample("gateway_delivery_queue_depth", subscriber=display)
        for n in range(5):
            await sub.put(message("slow", n))
        for answered in range(1, 5):
            tokens.put_nowait(None)
            await sink.wait_for(answered + 1)  # the next request is there: the last one was settled
            assert sample("gateway_events_delivered_total", source="slow", subscriber=display) == (
                delivered + answered
            )
            assert sample("gateway_delivery_latency_seconds_count", subscriber=display) == observed + answered
            assert sample("gateway_delivery_queue_depth", subscriber=display) == depth + 5 - answered
            assert sub.status()["delivered"] == answered
        tokens.put_nowait(None)


async def test_a_delivery_under_way_when_the_grace_ends_finishes_and_counts_once(sink: Sink) -> None:
    sink.gate.clear()
    outcomes = Outcomes()
    settings = dataclasses.replace(FAST, stop_wait=5.0)
    async with subscriber(sink.url, settings, grace=0.05) as sub:
        for n in range(5):
            await sub.put(message("cut", n, receipt=outcomes.receipt(n)))
        await sink.wait_for(1)
        asyncio.get_running_loop().call_later(0.3, sink.gate.set)  # the subscriber answers late
    assert sink.ids() == ["cut-0"]
    assert (sub.status()["delivered"], sub.status()["dropped"]) == (1, {"shutdown": 4})
    assert outcomes.done == {0: True, 1: False, 2: False, 3: False, 4: False}


async def test_a_receipt_is_settled_once_every_subscriber_is_done_with_its_event(sink: Sink) -> None:
    outcomes = Outcomes()
    async with serving() as other:
        other.gate.clear()
        fanout = Fanout(
            [
                Subscriber(parse_subscriber(u, Format.BINARY), FAST, gateway="gw")
                for u in (sink.url, other.url)
            ]
        )
        await fanout.start()
        try:
            event = eventing_pb2.Event(id="0", name="src", payload=b"{}")
            received = ReceivedEvent("src", event, datetime.now(UTC), outcomes.receipt(0))
            await fanout.publish(received, lambda r, fmt: message("src", 0, fmt, r.receipt))
            await sink.wait_for(1)
            await other.wait_for(1)
            await asyncio.sleep(0.1)  # time for a premature acknowledgement; none may come
            assert outcomes.done == {}, "one subscriber still holds the event"
            other.gate.set()
            await wait_until(lambda: 0 in outcomes.done, what="the receipt settled")
            assert outcomes.done == {0: True}
        finally:
            await fanout.close(grace=1.0)


async def test_with_the_drop_policy_a_receipt_is_settled_once_its_event_is_queued(sink: Sink) -> None:
    sink.gate.clear()
    outcomes = Outcomes()
    settings = dataclasses.replace(FAST, queue_size=2, when_full="drop")
    async with subscriber(sink.url, settings, grace=0.05) as sub:
        for n in range(5):
            await sub.put(message("q", n, receipt=outcomes.receipt(n)))
            if n == 0:
                await sink.wait_for(1)  # q-0 is in flight; q-1 and q-2 fill the queue
        assert outcomes.done == dict.fromkeys(range(5), True), (
            "queued or dropped for a full queue: all settled"
        )
    assert sub.status()["dropped"] == {"queue_full": 2, "shutdown": 3}


async def test_an_event_one_format_cannot_write_is_dropped_for_its_subscriber_alone(sink: Sink) -> None:
    outcomes = Outcomes()
    async with serving() as other:
        fanout = Fanout(
            [
                Subscriber(parse_subscriber(sink.url, Format.BINARY), FAST, gateway="gw"),
                Subscriber(parse_subscriber(other.url, Format.STRUCTURED), FAST, gateway="gw"),
            ]
        )
        await fanout.start()

        def encode(received: ReceivedEvent, fmt: Format) -> Message:
            if fmt is Format.STRUCTURED:
                raise RecursionError("maximum recursion depth exceeded")
            return message("src", 0, fmt, received.receipt)

        try:
            event = eventing_pb2.Event(id="e-0", name="src", payload=b"{}")
            received = ReceivedEvent("src", event, datetime.now(UTC), outcomes.receipt(0))
            await fanout.publish(received, encode)
            await sink.wait_for(1)
            await wait_until(lambda: 0 in outcomes.done, what="the receipt settled")
            binary, structured = fanout.status()
            assert (binary["delivered"], binary["dropped"]) == (1, {})
            assert (structured["delivered"], structured["dropped"]) == (0, {"unencodable": 1})
            assert other.arrivals == []
            assert outcomes.done == {0: True}
            labels = {"source": "src", "subscriber": structured["subscriber"], "reason": "unencodable"}
            assert sample("gateway_events_dropped_total", **labels) >= 1
        finally:
            await fanout.close(grace=1.0)
