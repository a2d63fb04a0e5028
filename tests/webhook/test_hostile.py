"""Malformed and hostile requests over a raw socket: each is refused (or dropped) without an event, and the
server goes on serving a good request right after."""

from __future__ import annotations

import asyncio

import pytest

from tests.webhook.conftest import Gateway, source_yaml
from tests.webhook.rawhttp import RawResponse, exchange, post, read_response

ANSWER_TIMEOUT = 1.0
"""Seconds to wait for an answer to a request the server may still be waiting to see the end of."""
HOSTILE: dict[str, tuple[bytes, set[int | None]]] = {
    "unknown-method": (b"BREW /h HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "not-http-at-all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, {400}),
    "http2-preface-on-http1": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400}),
    "request-line-of-20-kib": (b"POST /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "one-header-of-100-kib": (post("/h", b"x", {"X-Huge": "v" * 100_000}), {400}),
    "two-hundred-headers": (post("/h", b"x", {f"X-H{i}": "v" for i in range(200)}), {400}),
    "nul-in-a-header": (post("/h", b"x", {"X-Nul": "a\x00b"}), {400}),
    "negative-content-length": (post("/h", b"x", length=-1), {400}),
    "content-length-and-chunked": (
        post("/h", b"1\r\nx\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}, length=16),
        {400},
    ),
    "invalid-chunk-size": (
        b"POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        {400},
    ),
    "chunk-longer-than-declared": (
        b"POST /h HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        {400},
    ),
    "unterminated-headers": (b"POST /h HTTP/1.1\r\nHost: x\r\nX-A: b", {None}),
    "truncated-body": (post("/h", b"only ten b", length=100), {408}),
}


async def send_and_hang_up(port: int, data: bytes) -> RawResponse | None:
    """Send ``data`` and read the answer; None when the server closes, or waits for more, without one.

    The sending side stays open: aiohttp takes a half-closed connection for a lost one.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            return await read_response(reader, timeout=ANSWER_TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionResetError, TimeoutError):
            return None
    finally:
        writer.close()
        await writer.wait_closed()


async def assert_still_serving(port: int, gateway: Gateway) -> None:
    (source,) = gateway.sources
    response = await exchange(port, post("/h", b"good", {"Content-Type": "text/plain"}))
    assert response is not None and response.status == 200
    event = await source.next_event()
    assert event.payload == b"good"
    assert source.events.empty(), "the hostile request made no event"


@pytest.mark.parametrize("case", HOSTILE)
async def test_a_hostile_request_is_refused_and_the_next_good_one_is_served(
    gateway: Gateway, port: int, case: str
) -> None:
    await gateway.start("hook", source_yaml(port, "/h", readTimeout="300ms"))
    data, expected = HOSTILE[case]

    response = await send_and_hang_up(port, data)

    assert (response.status if response else None) in expected
    await assert_still_serving(port, gateway)


async def test_a_slow_body_against_a_short_read_timeout_is_408_and_the_next_request_is_served(
    gateway: Gateway, port: int
) -> None:
    await gateway.start("hook", source_yaml(port, "/h", readTimeout="300ms"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/h", b"", length=1000))
    for _ in range(3):
        writer.write(b"drip")
        await writer.drain()

    response = await read_response(reader)
    writer.close()
    await writer.wait_closed()

    assert response.status == 408
    await assert_still_serving(port, gateway)


async def test_many_connections_that_never_send_anything_do_not_stop_a_good_request(
    gateway: Gateway, port: int
) -> None:
    await gateway.start("hook", source_yaml(port, "/h"))
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]

    await assert_still_serving(port, gateway)

    for _, writer in idle:
        writer.close()
        await writer.wait_closed()
