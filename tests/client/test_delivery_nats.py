"""NATS and JetStream delivery against a real nats-server from the harness."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import nats
import nats.errors
from nats.aio.client import Client
from nats.js.api import StreamConfig

from common.client.delivery import DeliverySettings, Subscriber
from common.client.metrics import REGISTRY
from common.client.model import Format, Message
from common.client.subscribers import parse_subscriber
from common.retry import Backoff
from tests.harness.nats import NatsServer, nats_server
from tests.harness.processes import wait_until

GATEWAY = "test-gateway"
SUBJECT = f"{GATEWAY}:src"
FAST = DeliverySettings(
    retry=Backoff(duration=0.01, factor=2.0, jitter=0.0, cap=0.05),
    request_timeout=0.5,
    nats_reconnect_wait=0.05,
)
"""Tiny backoffs and reconnect waits so outages in these tests last milliseconds."""


@contextlib.asynccontextmanager
async def subscriber(url: str, fmt: Format = Format.BINARY) -> AsyncIterator[Subscriber]:
    sub = Subscriber(parse_subscriber(url, fmt), FAST, gateway=GATEWAY)
    await sub.start()
    try:
        yield sub
    finally:
        await sub.close(5.0)


async def _quiet(exc: Exception) -> None:
    """The test's own connection sees the outages the tests cause; they are not news."""


@contextlib.asynccontextmanager
async def client(server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(server.url, reconnect_time_wait=0.05, max_reconnect_attempts=-1, error_cb=_quiet)
    try:
        yield nc
    finally:
        await nc.close()


def message(source: str, n: int, *, event_id: str = "", body: bytes = b"", binary: bool = True) -> Message:
    event_id = event_id or f"{source}-{n}"
    headers = {"ce-id": event_id, "ce-source": source, "ce-specversion": "1.0", "ce-type": "test"}
    if not binary:
        structured = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        payload = body or f'{{"id": "{event_id}", "data": {{"n": {n}}}}}'.encode()
        return Message(event_id, source, payload, structured, time.monotonic(), format=Format.STRUCTURED)
    return Message(
        event_id,
        source,
        body or f'{{"n": {n}}}'.encode(),
        {**headers, "Content-Type": "application/json"},
        time.monotonic(),
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def stored(nc: Client, stream: str) -> int:
    """Messages in ``stream``; 0 while the test's own connection is still coming back."""
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except nats.errors.Error:
        return 0


async def holds(nc: Client, stream: str, count: int) -> bool:
    return await stored(nc, stream) >= count


async def stored_ids(nc: Client, stream: str, count: int) -> list[str]:
    js = nc.jetstream()
    return [(await js.get_msg(stream, seq)).headers["Nats-Msg-Id"] for seq in range(1, count + 1)]  # type: ignore[index]


async def test_core_nats_subscribers_get_every_message_in_order_with_ce_headers_in_binary_mode() -> None:
    async with nats_server(jetstream=False) as server, client(server) as nc:
        inbox = await nc.subscribe(SUBJECT)
        await nc.flush()
        async with subscriber(server.url) as sub:
            for n in range(50):
                await sub.put(message("src", n))
            received = [await inbox.next_msg(timeout=5) for _ in range(50)]
        assert [m.headers["ce-id"] for m in received if m.headers] == [f"src-{n}" for n in range(50)]
        assert received[0].data == b'{"n": 0}'
        assert received[0].headers is not None
        assert received[0].headers["ce-datacontenttype"] == "application/json"
        assert "Content-Type" not in received[0].headers
        assert sub.status()["delivered"] == 50


async def test_a_subject_template_names_the_subject_and_structured_mode_names_its_format() -> None:
    async with nats_server(jetstream=False) as server, client(server) as nc:
        inbox = await nc.subscribe("events.>")
        await nc.flush()
        async with subscriber(f"{server.url}/events.{{gateway}}.{{source}}", Format.STRUCTURED) as sub:
            await sub.put(message("orders", 0, binary=False))
            await sub.put(message("billing", 0, binary=False))
            first, second = await inbox.next_msg(timeout=5), await inbox.next_msg(timeout=5)
        assert {first.subject, second.subject} == {
            "events.test-gateway.orders",
            "events.test-gateway.billing",
        }
        for received in (first, second):
            assert received.headers == {"Content-Type": "application/cloudevents+json; charset=utf-8"}


async def test_jetstream_stores_each_event_once_even_when_its_id_is_published_twice() -> None:
    async with nats_server() as server, client(server) as nc:
        await nc.jetstream().add_stream(StreamConfig(name="EVENTS", subjects=[SUBJECT]))
        url = server.url.replace("nats://", "jetstream://")
        async with subscriber(url) as sub:
            await sub.put(message("src", 0))
            await sub.put(message("src", 0))  # the same event again, e.g. after a client restart
            await sub.put(message("src", 1))
        assert sub.status()["delivered"] == 3
        assert await stored(nc, "EVENTS") == 2
        assert await stored_ids(nc, "EVENTS", 2) == ["src-0", "src-1"]
        headers = (await nc.jetstream().get_msg("EVENTS", 1)).headers
        assert headers is not None and headers["ce-id"] == "src-0"


async def test_without_a_stream_delivery_is_retried_and_shown_until_a_stream_captures_the_subject() -> None:
    async with nats_server() as server, client(server) as nc:
        url = server.url.replace("nats://", "jetstream://")
        async with subscriber(url) as sub:
            for n in range(3):
                await sub.put(message("src", n))
            await wait_until(
                lambda: sub.status()["last_error"] is not None, what="delivery fails without a stream"
            )
            assert sub.status()["last_error"] == f"no JetStream stream captures subject {SUBJECT!r}"
            assert sub.status()["queued"] == 3
            await nc.jetstream().add_stream(StreamConfig(name="LATE", subjects=[SUBJECT]))
            await wait_until(lambda: sub.status()["queued"] == 0, what="the queued events are delivered")
            assert sub.status()["last_error"] is None
        assert await stored_ids(nc, "LATE", 3) == ["src-0", "src-1", "src-2"]
        assert sub.status()["retried"] >= 1 and sub.status()["dropped"] == {}


async def test_a_message_over_max_payload_is_dropped_as_too_large_and_the_next_still_arrives() -> None:
    async with nats_server(jetstream=False) as server, client(server) as nc:
        inbox = await nc.subscribe(SUBJECT)
        await nc.flush()
        async with subscriber(server.url) as sub:
            labels = {"source": "src", "subscriber": sub.display, "reason": "too_large"}
            before = sample("gateway_events_dropped_total", **labels)
            await sub.put(message("src", 0, body=b"x" * (nc.max_payload + 1)))
            await sub.put(message("src", 1))
            received = await inbox.next_msg(timeout=5)
        assert received.headers is not None and received.headers["ce-id"] == "src-1"
        assert sample("gateway_events_dropped_total", **labels) == before + 1
        assert sub.status()["dropped"] == {"too_large": 1}


async def test_events_produced_while_the_nats_server_is_down_arrive_after_it_returns() -> None:
    async with nats_server() as server, client(server) as nc:
        await nc.jetstream().add_stream(StreamConfig(name="EVENTS", subjects=[SUBJECT]))
        url = server.url.replace("nats://", "jetstream://")
        async with subscriber(url) as sub:
            await sub.put(message("src", 0))
            await wait_until(lambda: sub.status()["delivered"] == 1, what="the first event is delivered")
            await server.stop()
            await wait_until(lambda: not sub.status()["connected"], what="the client notices the outage")
            for n in range(1, 6):
                await sub.put(message("src", n))
            await wait_until(lambda: sub.status()["retried"] >= 1, what="delivery fails during the outage")
            await server.start()
            await wait_until(lambda: sub.status()["queued"] == 0, what="the held events are delivered")
        await wait_until(lambda: holds(nc, "EVENTS", 6), what="the test's own connection is back")
        assert await stored_ids(nc, "EVENTS", 6) == [f"src-{n}" for n in range(6)]


async def test_a_subscriber_started_before_its_nats_server_is_up_delivers_once_it_is() -> None:
    async with nats_server() as server:
        async with client(server) as nc:
            await nc.jetstream().add_stream(StreamConfig(name="EVENTS", subjects=[SUBJECT]))
        await server.stop()  # the stream stays in the server's store
        async with subscriber(server.url.replace("nats://", "jetstream://")) as sub:
            for n in range(3):
                await sub.put(message("src", n))
            await wait_until(
                lambda: sub.status()["retried"] >= 1, what="delivery fails while the server is down"
            )
            assert sub.status()["last_error"] == "not connected to NATS (connecting)"
            await server.start()
            await wait_until(lambda: sub.status()["queued"] == 0, what="the held events are delivered")
        async with client(server) as nc:
            assert await stored_ids(nc, "EVENTS", 3) == ["src-0", "src-1", "src-2"]
        assert sub.status()["dropped"] == {}
