"""The AMQP gateway tested from the outside: ``gateway run amqp`` and ``gateway validate amqp`` as
processes, the harness's RabbitMQ node, messages published with raw AMQP 0-9-1 frames built here
(content header property flags and field tables by hand: no aio-pika, which the gateway uses), and a
subscriber that is a bare asyncio HTTP/1.1 server parsing the CloudEvent headers itself
(``RawSink``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import struct
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aio_pika
import pytest

from tests.harness.brokers import RabbitMQ, shared_rabbitmq
from tests.harness.brokers_amqp import (
    BASIC,
    BASIC_ACK,
    BASIC_PUBLISH,
    CHANNEL,
    FRAME_BODY,
    FRAME_HEADER,
    AmqpConnection,
)
from tests.harness.brokers_wire import tcp
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.kafka import phase_is
from tests.harness.processes import wait_until
from tests.harness.raw_sink import Arrival, RawSink, metrics, run

pytestmark = pytest.mark.slow

# --- AMQP 0-9-1 content headers by hand ---------------------------------------------------------------

CONTENT_TYPE, HEADERS, DELIVERY_MODE, PRIORITY, CORRELATION_ID, REPLY_TO = 15, 13, 12, 11, 10, 9
MESSAGE_ID, TIMESTAMP, TYPE, APP_ID = 7, 6, 5, 3
"""Bit numbers of the basic class's property flags (AMQP 0-9-1, 4.2.6.1); values go highest bit first."""

Property = tuple[int, bytes]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
_names = itertools.count()


def short(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def long(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def table(*fields: tuple[str, bytes, bytes]) -> bytes:
    """A field table of (name, type octet, encoded value)."""
    return long(b"".join(short(name) + kind + value for name, kind, value in fields))


def nested(depth: int) -> bytes:
    """A table holding a table holding ... ``depth`` deep."""
    inner = table(("leaf", b"S", long(b"x")))
    for _ in range(depth):
        inner = table(("n", b"F", inner))
    return inner


def message_id(text: str) -> Property:
    return MESSAGE_ID, short(text)


class RawPublisher(AmqpConnection):
    """The harness's bare-streams AMQP connection, publishing with any content-header properties."""

    async def send(self, exchange: str, routing_key: str, body: bytes, *properties: Property) -> None:
        """``Basic.Publish`` + content header + body frames; waits for the broker's confirm."""
        flags, encoded = 0, b""
        for bit, raw in sorted(properties, key=lambda p: -p[0]):
            flags |= 1 << bit
            encoded += raw
        await self._call(BASIC_PUBLISH, struct.pack(">H", 0) + short(exchange) + short(routing_key) + b"\0")
        header = struct.pack(">HHQH", BASIC, 0, len(body), flags) + encoded
        await self._send(FRAME_HEADER, CHANNEL, header)
        for start in range(0, len(body), self._frame_max - 8):
            await self._send(FRAME_BODY, CHANNEL, body[start : start + self._frame_max - 8])
        self._published += 1
        await self._expect(BASIC_ACK)


@contextlib.asynccontextmanager
async def raw_publisher(broker: RabbitMQ) -> AsyncIterator[RawPublisher]:
    async with tcp(broker.port) as (reader, writer):
        publisher = RawPublisher(reader, writer)
        await publisher.handshake("guest", "guest", "/")
        await publisher.confirm_select()
        yield publisher


# --- a subscriber that parses HTTP by hand ---------------------------------------------------------------


# --- a gateway around one durable queue -----------------------------------------------------------------

Message = tuple[bytes, Sequence[Property]]


def durable(broker: RabbitMQ, exchange: str, queue: str) -> str:
    return (
        f"url: {broker.url}\nexchangeName: {exchange}\nexchangeType: topic\nroutingKey: 'k.#'\n"
        f"backoff: {{duration: 200ms, factor: 1, jitter: 0, steps: 0}}\nqueueDeclare: {{name: {queue}}}"
    )


@contextlib.asynccontextmanager
async def durable_gateway(tmp: Path, broker: RabbitMQ, sink: RawSink) -> AsyncIterator[tuple[Gateway, str]]:
    """``gateway run amqp`` reading a fresh durable queue ``q-out-<n>`` bound to exchange ``x-out-<n>``
    with ``k.#``; the exchange; the queue deleted after."""
    n = next(_names)
    exchange, queue = f"x-out-{n}", f"q-out-{n}"
    config = tmp / "cm.yaml"
    config.write_text(configmap(dq=durable(broker, exchange, queue)))
    gateway = Gateway(tmp, config, [sink.url], pod=False, kind="amqp")
    try:
        await gateway.start()
        await wait_until(lambda: phase_is(gateway, "dq", "Running"), what="the source Running", timeout=20)
        yield gateway, exchange
    finally:
        await gateway.stop()
        connection = await aio_pika.connect(broker.url)
        async with connection:
            await (await connection.channel()).queue_delete(queue)


async def deliver(tmp: Path, messages: Sequence[Message]) -> list[Arrival]:
    """Publish ``messages`` with routing key ``k.a`` through a fresh durable-queue gateway; what the
    subscriber accepted once it has as many."""
    async with shared_rabbitmq() as broker, RawSink() as sink, durable_gateway(tmp, broker, sink) as (_, ex):
        async with raw_publisher(broker) as publisher:
            for body, properties in messages:
                await publisher.send(ex, "k.a", body, *properties)
        await wait_until(lambda: len(sink.arrivals) >= len(messages), what="every message", timeout=15)
        return list(sink.arrivals)


# --- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param((TIMESTAMP, struct.pack(">Q", 1_700_000_000 * 10**9)), id="timestamp-in-nanoseconds"),
        pytest.param((HEADERS, nested(2000)), id="headers-nested-2000-deep"),
    ],
)
async def test_a_message_whose_properties_python_cannot_decode_does_not_wedge_a_durable_queue(
    tmp_path: Path, poison: Property
) -> None:
    """AMQP's ``timestamp`` is a 64-bit count of seconds; a Go publisher may set it from
    ``UnixNano()`` (pamqp reads values past 2106 as milliseconds, which still gives the year 55,843).
    A field table may nest as deep as a frame allows. RabbitMQ routes both. Seen: pamqp cannot build
    the content header (``year ... is out of range``; ``RecursionError``), aiormq's reader dies, the
    source reports "the broker closed the connection" and reconnects, the broker redelivers the same
    message first, forever (hundreds of reconnects a minute): no later message of the queue is ever
    delivered, and the message before it, whose ack the dead connection never sent, arrives again on
    every reconnect (dozens of times, not at most once per crash). Expected: the message becomes an
    event without the undecodable property (or is dropped, counted and acked), and the queue moves
    on."""
    async with shared_rabbitmq() as broker, RawSink() as sink:  # noqa: SIM117 (the gateway needs both)
        async with durable_gateway(tmp_path, broker, sink) as (gateway, exchange):
            async with raw_publisher(broker) as publisher:
                await publisher.send(exchange, "k.a", b"before", message_id("before"))
                await publisher.send(exchange, "k.a", b"poison", message_id("poison"), poison)
                await publisher.send(exchange, "k.a", b"after", message_id("after"))
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: b"after" in [a.body for a in sink.arrivals], what="after", timeout=8)
            text = await metrics(gateway.ops_port)
            reconnects = re.findall(r'^amqp_reconnects_total\{source="dq"\} (\S+)$', text, re.M)
            bodies = [a.body for a in sink.arrivals]
            assert b"after" in bodies, (
                f"the queue is wedged behind the message: {bodies.count(b'before')} arrivals of 'before',"
                f" {bodies.count(b'poison')} of the message, reconnects {reconnects}"
            )
            assert bodies.count(b"before") == 1, f"'before' arrived {bodies.count(b'before')} times"


async def test_hostile_but_decodable_messages_arrive_byte_for_byte_in_order_with_their_metadata(
    tmp_path: Path,
) -> None:
    """Pinned: an empty body, every byte value, content types valid, invalid and CloudEvents-like,
    a header table of every AMQP field type, the basic properties, and message ids too long or
    unprintable for an id."""
    headers = table(
        ("bin", b"x", long(b"\xff\x00")),
        ("inner", b"F", table(("i", b"I", struct.pack(">i", -5)))),
        ("void", b"V", b""),
        ("flag", b"t", b"\x01"),
        ("list", b"A", long(b"I" + struct.pack(">i", 1))),
        ("dec", b"D", b"\x02" + struct.pack(">i", 12345)),
        ("at", b"T", struct.pack(">Q", 1_700_000_000)),
        ("deep", b"F", nested(200)),
    )
    arrivals = await deliver(
        tmp_path,
        [
            (b"", [message_id("empty")]),
            (bytes(range(256)), [message_id("binary"), (CONTENT_TYPE, short("application/json"))]),
            (b"{}", [message_id("bad-type"), (CONTENT_TYPE, short("not a type"))]),
            (b"{}", [message_id("ce-type"), (CONTENT_TYPE, short("application/cloudevents+json"))]),
            (b"h", [message_id("headers"), (HEADERS, headers)]),
            (
                b"p",
                [
                    message_id("props"),
                    (CORRELATION_ID, short("corr")),
                    (REPLY_TO, short("rt")),
                    (PRIORITY, b"\x05"),
                    (DELIVERY_MODE, b"\x02"),
                    (APP_ID, short("app")),
                    (TYPE, short("ty")),
                    (TIMESTAMP, struct.pack(">Q", 1_700_000_000)),
                ],
            ),
            (b"long", [message_id("x" * 201)]),
            (b"unprintable", [message_id("a\tb")]),
        ],
    )
    by_body = {a.body: a for a in arrivals}
    assert [a.body for a in arrivals][:5] == [b"", bytes(range(256)), b"{}", b"{}", b"h"], "in queue order"
    assert by_body[b""].id == "dq:empty" and by_body[b""].ce("eventsubject") == "k.a"
    binary = by_body[bytes(range(256))]
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.ce("origcontenttype") == "application/json"
    assert arrivals[2].headers["content-type"] == "application/octet-stream"
    assert arrivals[3].headers["content-type"] == "application/octet-stream"
    assert arrivals[3].ce("origcontenttype") == "application/cloudevents+json"
    table_seen = json.loads(by_body[b"h"].ce("headers") or "{}")
    assert {k: v for k, v in table_seen.items() if k != "deep"} == {
        "bin": "base64:/wA=",
        "inner": {"i": -5},
        "void": None,
        "flag": True,
        "list": [1],
        "dec": "123.45",
        "at": "2023-11-14T22:13:20+00:00",
    }
    props = by_body[b"p"]
    assert props.ce("time") == "2023-11-14T22:13:20Z" and props.ce("exchange") == arrivals[0].ce("exchange")
    assert json.loads(props.ce("properties") or "{}") == {
        "correlationid": "corr",
        "replyto": "rt",
        "priority": 5,
        "deliverymode": 2,
        "appid": "app",
        "type": "ty",
    }
    for body in (b"long", b"unprintable"):
        source, _, fresh = by_body[body].id.partition(":")
        assert source == "dq" and UUID.match(fresh), f"{body!r}: a fresh id, got {by_body[body].id}"


async def test_the_properties_extension_names_only_the_properties_the_publisher_set(tmp_path: Path) -> None:
    """README: ``properties`` is "JSON of the other basic properties that are set". A message
    published with a message id alone sets no priority and no delivery mode. Seen:
    ``{"priority":0,"deliverymode":1}`` on every such message (aio-pika's defaults for an absent
    property), so a subscriber is told a message was published transient when its publisher said
    nothing, and every event carries the extension."""
    arrivals = await deliver(tmp_path, [(b"bare", [message_id("bare")])])
    assert arrivals[0].ce("properties") is None, f"properties never set: {arrivals[0].ce('properties')}"


async def test_a_message_id_with_a_trailing_space_is_not_printable_ascii_and_gets_a_fresh_id(
    tmp_path: Path,
) -> None:
    """README: the id is ``<source>:<message_id>`` when the message id is printable ASCII (a space is
    not: ``"a b"`` gets a fresh id). Seen: ``"m-1 "`` is stripped to ``dq:m-1``, the id of another
    message, whose publisher set ``m-1``: a subscriber de-duplicating by id drops one of them."""
    arrivals = await deliver(tmp_path, [(b"one", [message_id("m-1")]), (b"two", [message_id("m-1 ")])])
    assert arrivals[0].id == "dq:m-1"
    assert arrivals[1].id != "dq:m-1", "two messages with different message ids share an event id"


def _cm(tmp: Path, **sources: str) -> Path:
    path = tmp / "cm.yaml"
    path.write_text(configmap(**sources))
    return path


BASE = "url: amqp://h/\nexchangeName: e\nexchangeType: topic\nroutingKey: k"


async def test_validate_names_each_bad_field_of_each_key_and_passes_the_good_one(tmp_path: Path) -> None:
    """Pinned: booleans are not numbers, huge and zero values are named, YAML garbage in one key
    leaves the others alone."""
    path = _cm(
        tmp_path,
        booleans=f"{BASE}\nrateLimit: true\nratePeriod: true",
        huge=f"{BASE}\nrateLimit: 100000000000000000000000\nratePeriod: 1",
        zero=f"{BASE}\nrateLimit: 0\nratePeriod: 0",
        half=f"{BASE}\nrateLimit: 5",
        port="url: amqp://h:99999/\nexchangeName: e\nexchangeType: topic\nroutingKey: k",
        types="url: amqp://h/\nexchangeName: 5\nexchangeType: topic\nroutingKey: [a]",
        amq=f"{BASE}\nqueueDeclare: {{name: amq.gen}}",
        garbage="{{{{ : : ]",
        good=BASE,
    )
    code, out = await run([*GATEWAY, "validate", "amqp", str(path)])
    lines = dict(
        line.split(None, 1)[1].split(":", 1) for line in out.splitlines() if line.startswith("INVALID")
    )
    assert code == 1, out
    assert "OK      good" in out
    assert "rateLimit" in lines["booleans"] and "ratePeriod" in lines["booleans"]
    assert "rateLimit" in lines["huge"] and "rateLimit" in lines["zero"] and "ratePeriod" in lines["zero"]
    assert "RateLimit and RatePeriod" in lines["half"] or "ratePeriod" in lines["half"], lines["half"]
    assert "url" in lines["port"] and "exchangeName" in lines["types"] and "routingKey" in lines["types"]
    assert "queueDeclare.name" in lines["amq"] and "YAML" in lines["garbage"]


async def test_validate_refuses_a_null_queue_declare_rather_than_silently_running_at_most_once(
    tmp_path: Path,
) -> None:
    """``queueDeclare:`` with nothing after it (YAML null: a block whose lines were lost or
    mis-indented) asks for the at-least-once mode and gives no queue name. Seen: ``OK``, and the
    source runs v0.11's exclusive queue, at most once, losing what is published while it is down.
    Expected: refused naming ``queueDeclare`` (as the Kafka gateway now refuses a null
    consumerGroup)."""
    code, out = await run([*GATEWAY, "validate", "amqp", str(_cm(tmp_path, q=f"{BASE}\nqueueDeclare:"))])
    assert code == 1 and "queueDeclare" in out, f"a null queueDeclare passes: rc={code} {out!r}"


async def test_validate_refuses_a_backoff_factor_that_is_not_a_number(tmp_path: Path) -> None:
    """``factor: .nan`` is YAML's NaN. Seen: ``OK``; the source then fails at its second attempt
    with ``ValueError: cannot convert float NaN to integer`` (``will retry in nans``) and
    crash-loops through the client's restarts. Expected: refused naming ``backoff.factor`` (NaN is
    not ``>= 1``); likewise ``duration`` and ``jitter``."""
    path = _cm(tmp_path, f=f"{BASE}\nbackoff: {{duration: 1s, factor: .nan}}")
    code, out = await run([*GATEWAY, "validate", "amqp", str(path)])
    assert code == 1 and "backoff.factor" in out, f"a NaN backoff factor passes: rc={code} {out!r}"
