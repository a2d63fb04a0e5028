"""The readers tests judge deliveries with: the JavaScript CloudEvents reader and the raw NATS reader."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats

from tests.harness.cereader import JsReader, running_js_reader
from tests.harness.nats import nats_server
from tests.harness.raw_nats import RawMessage, raw_nats_subscriber

CE_HEADERS = [
    ("ce-specversion", "1.0"),
    ("ce-type", "com.example.object.deleted.v2"),
    ("ce-source", "/mycontext/subcontext"),
    ("ce-id", "1234-1234-1234"),
]


def http_request(path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[bytes, list[list[str]]]:
    """An HTTP/1.1 POST written out by hand, and the header pairs the reader should record for it."""
    sent = [("Host", "127.0.0.1"), *headers, ("Content-Length", str(len(body))), ("Connection", "close")]
    head = "".join(f"{name}: {value}\r\n" for name, value in sent)
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body, [list(pair) for pair in sent]


async def send(reader: JsReader, raw: bytes) -> bytes:
    """Write ``raw`` to the reader's port and end it; the status line it answers (empty if none)."""
    stream, writer = await asyncio.open_connection("127.0.0.1", reader.port)
    try:
        writer.write(raw)
        writer.write_eof()
        await writer.drain()
        return (await stream.readline()).strip()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def post(reader: JsReader, headers: list[tuple[str, str]], body: bytes, path: str = "/in") -> int:
    status_line = await send(reader, http_request(path, headers, body)[0])
    return int(status_line.split()[1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_the_js_reader_reads_a_binary_mode_request_as_the_http_binding_spells_it(
    tmp_path: Path,
) -> None:
    body = b'{"hello": "world"}'
    headers = [
        *CE_HEADERS,
        ("ce-time", "2018-04-05T17:31:00Z"),
        ("ce-subject", "123"),
        ("ce-comexampleextension1", "value"),
        ("Content-Type", "application/json"),
    ]
    raw, sent = http_request("/binary", headers, body)
    async with running_js_reader(tmp_path) as reader:
        assert await send(reader, raw) == b"HTTP/1.1 200 OK"
        [record] = await reader.records()
    assert record["path"] == "/binary"
    assert record["headers"] == sent
    assert record["body_b64"] == b64(body)
    assert record["ok"] is True
    assert record["events"] == [
        {
            "specversion": "1.0",
            "type": "com.example.object.deleted.v2",
            "source": "/mycontext/subcontext",
            "id": "1234-1234-1234",
            "time": "2018-04-05T17:31:00.000Z",
            "subject": "123",
            "comexampleextension1": "value",
            "datacontenttype": "application/json",
            "data_kind": "json",
            "data": {"hello": "world"},
            "valid": True,
        }
    ]


async def test_the_js_reader_reads_a_structured_mode_request_as_the_json_format_spells_it(
    tmp_path: Path,
) -> None:
    event = {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/json",
        "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
    }
    body = json.dumps(event).encode()
    async with running_js_reader(tmp_path) as reader:
        assert (
            await post(reader, [("Content-Type", "application/cloudevents+json; charset=utf-8")], body) == 200
        )
        [record] = await reader.records()
    assert record["ok"] is True
    assert record["body_b64"] == b64(body)
    assert record["events"] == [
        {**event, "time": "2018-04-05T17:31:00.000Z", "data_kind": "json", "valid": True},
    ]


async def test_a_binary_request_without_ce_id_is_reported_as_no_cloud_event(tmp_path: Path) -> None:
    headers = [pair for pair in CE_HEADERS if pair[0] != "ce-id"] + [("Content-Type", "application/json")]
    async with running_js_reader(tmp_path) as reader:
        assert await post(reader, headers, b"{}") == 200
        [record] = await reader.records()
    assert record["ok"] is False
    assert record["error"] == "no cloud event detected"
    assert record["events"] == []


def _data(event: dict[str, Any]) -> tuple[str, Any]:
    """How the SDK presented an event's data: its kind, and the value, base64 bytes or class."""
    kind = event["data_kind"]
    if kind == "bytes":
        return kind, (event["data_class"], base64.b64decode(event["data_b64"]))
    return kind, event.get("data")


def _structured(**fields: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "type": "t", "source": "/s", "id": "1", **fields}).encode()


async def test_the_sdk_presents_data_per_content_type_as_the_reader_documents(tmp_path: Path) -> None:
    structured = [("Content-Type", "application/cloudevents+json")]
    binary = [
        ("application/json", b'{"a": 1}', ("json", {"a": 1})),
        ("application/json; charset=utf-8", b"[1, 2]", ("json", [1, 2])),
        ("application/json;charset=utf-8", b'{"a": 1}', ("string", '{"a": 1}')),
        ("application/json", b"42", ("string", "42")),
        ("text/plain", b"hello", ("string", "hello")),
        ("application/octet-stream", b"\x00\xff", ("string", "\x00\ufffd")),
        (None, b"\x01", ("string", "\x01")),
    ]
    async with running_js_reader(tmp_path) as reader:
        for content_type, body, _ in binary:
            await post(reader, CE_HEADERS + ([("Content-Type", content_type)] if content_type else []), body)
        await post(reader, structured, _structured(datacontenttype="application/json", data='{"a": 1}'))
        await post(reader, structured, _structured(data=0))
        await post(reader, structured, _structured(data_base64=b64(b"\x00\x01\xff")))
        await reader.set_body_as("buffer")
        await post(reader, [*CE_HEADERS, ("Content-Type", "application/json")], b'{"a": 1}')
        await post(reader, [*CE_HEADERS, ("Content-Type", "application/octet-stream")], b"\x00\xff")
        events = await reader.events()
    assert [_data(e) for e in events] == [
        *(expected for _, _, expected in binary),
        ("string", '{"a": 1}'),
        ("none", None),
        ("bytes", ("Uint32Array", b"\x00\x01\xff")),
        ("bytes", ("Buffer", b'{"a": 1}')),
        ("bytes", ("Buffer", b"\x00\xff")),
    ]
    assert all(e["valid"] for e in events)


async def test_a_batch_request_gives_one_event_per_element(tmp_path: Path) -> None:
    batch = [
        {"specversion": "1.0", "type": "t", "source": "/s", "id": "a", "data": {"n": 1}},
        {"specversion": "1.0", "type": "t", "source": "/s", "id": "b", "data_base64": b64(b"\x07")},
    ]
    async with running_js_reader(tmp_path) as reader:
        await post(
            reader, [("Content-Type", "application/cloudevents-batch+json")], json.dumps(batch).encode()
        )
        [record] = await reader.records()
    assert record["ok"] is True
    assert [(e["id"], _data(e)) for e in record["events"]] == [
        ("a", ("json", {"n": 1})),
        ("b", ("bytes", ("Uint8Array", b"\x07"))),
    ]


async def test_the_reader_answers_the_status_it_is_given_and_forgets_records_when_cleared(
    tmp_path: Path,
) -> None:
    headers = [*CE_HEADERS, ("Content-Type", "text/plain")]
    async with running_js_reader(tmp_path, status=202) as reader:
        assert await post(reader, headers, b"first") == 202
        await reader.set_status(503)
        assert await post(reader, headers, b"second") == 503
        assert [r["body_b64"] for r in await reader.wait_for(2)] == [b64(b"first"), b64(b"second")]
        await reader.clear()
        assert await reader.records() == []


async def test_hostile_requests_leave_the_reader_reading(tmp_path: Path) -> None:
    async with running_js_reader(tmp_path) as reader:
        assert (await send(reader, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (
            await send(reader, b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            == b"HTTP/1.1 400 Bad Request"
        )
        assert await post(reader, [("Content-Type", "application/cloudevents+json")], b"{not json") == 200
        assert await post(reader, [("Content-Type", "application/cloudevents-batch+json")], b"{}") == 200
        assert await post(reader, [*CE_HEADERS, ("Content-Type", "text/plain")], b"still here") == 200
        records = await reader.records()
    assert [(r["path"], r["ok"]) for r in records] == [
        ("/cut", False),
        ("/in", False),
        ("/in", False),
        ("/in", True),
    ]
    assert all(isinstance(r["error"], str) and r["error"] for r in records[:3])
    assert records[0]["error"].startswith("body not read")
    assert records[-1]["events"][0]["data"] == "still here"


async def test_the_raw_nats_reader_keeps_headers_in_order_and_case_and_the_payload_byte_for_byte() -> None:
    payload = b'{"n": 1}\r\nMSG x 1 3\r\n\x00\xff'
    headers = {"Ce-Id": "e-1", "content-type": "application/json", "ce-Source": "/s"}
    async with nats_server(jetstream=False) as server, raw_nats_subscriber(server.port, "events.>") as reader:
        nc = await nats.connect(server.url)
        try:
            await nc.publish("events.a", payload, headers=headers)
            await nc.flush()
        finally:
            await nc.close()
        [message] = await reader.wait_for(1)
    assert message == RawMessage(
        subject="events.a",
        headers=(("Ce-Id", "e-1"), ("content-type", "application/json"), ("ce-Source", "/s")),
        status="NATS/1.0",
        payload=payload,
        header_block=b"NATS/1.0\r\nCe-Id: e-1\r\ncontent-type: application/json\r\nce-Source: /s\r\n\r\n",
    )


async def test_the_raw_nats_reader_reads_a_message_without_headers_as_a_plain_msg() -> None:
    async with nats_server(jetstream=False) as server, raw_nats_subscriber(server.port, "events.a") as reader:
        nc = await nats.connect(server.url)
        try:
            await nc.publish("events.a", b"\x00plain\r\n", reply="inbox.1")
            await nc.publish("events.a", b"")
            await nc.flush()
        finally:
            await nc.close()
        messages = await reader.wait_for(2)
    assert messages == [
        RawMessage("events.a", (), "", b"\x00plain\r\n", reply_to="inbox.1"),
        RawMessage("events.a", (), "", b""),
    ]


async def test_a_hand_written_hpub_keeps_its_status_line_and_repeated_names() -> None:
    block = b"NATS/1.0 503 No Responders\r\nX-Seen: 1\r\nx-seen: 2\r\nEmpty:\r\n\r\n"
    async with nats_server(jetstream=False) as server, raw_nats_subscriber(server.port, "events.a") as reader:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b'CONNECT {"verbose":false,"headers":true}\r\n')
        writer.write(b"HPUB events.a %d %d\r\n%sdata\r\nPING\r\n" % (len(block), len(block) + 4, block))
        await writer.drain()
        [message] = await reader.wait_for(1)
        writer.close()
        await writer.wait_closed()
    assert (message.status, message.status_code) == ("NATS/1.0 503 No Responders", 503)
    assert message.headers == (("X-Seen", "1"), ("x-seen", "2"), ("Empty", ""))
    assert message.values("X-SEEN") == ["1", "2"]
    assert (message.header_block, message.payload) == (block, b"data")


@contextlib.asynccontextmanager
async def fake_nats_server(script: list[bytes]) -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    """A one-connection server: sends INFO, answers the first PING, then writes ``script`` piece by piece."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"fake","headers":true,"max_payload":1048576}\r\n')
        for _ in range(3):  # CONNECT, SUB, PING
            await received.put(await stream.readline())
        writer.write(b"PONG\r\n")
        for piece in script:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)  # each piece its own segment, so frames arrive split
        await received.put(await stream.readline())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def test_the_raw_nats_reader_answers_pings_and_reads_frames_split_across_writes() -> None:
    script = [b"HMSG s 1 rep", b"ly 18 21\r\nNATS/1.0\r\nA: b\r\n\r", b"\nxyz\r\nPI", b"NG\r\n"]
    async with fake_nats_server(script) as (port, received), raw_nats_subscriber(port, "s") as reader:
        [message] = await reader.wait_for(1)
        lines = [await asyncio.wait_for(received.get(), 5) for _ in range(4)]
    assert lines == [
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false,"protocol":1}\r\n',
        b"SUB s 1\r\n",
        b"PING\r\n",
        b"PONG\r\n",
    ]
    assert message == RawMessage("s", (("A", "b"),), "NATS/1.0", b"xyz", "reply", b"NATS/1.0\r\nA: b\r\n\r\n")
