"""The client's HTTP/1.1 wire (``common.client.delivery.http_wire``) against subscribers written on
bare asyncio sockets: each test scripts what its subscriber reads and writes, byte for byte, so no
HTTP library stands between the wire and the assertion."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop

from common.client.delivery import http_wire
from common.client.delivery.http_wire import BODY_KEPT, MAX_HEAD, Pool, WireError
from tests.harness.pki import OPENSSL, self_signed

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[["Peer", Reader, Writer], Awaitable[None]]


@dataclass
class Request:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


@dataclass
class Peer:
    """A subscriber on 127.0.0.1: ``handler`` serves each connection; requests read are kept."""

    handler: Handler
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in?x=1"

    async def read(self, reader: asyncio.StreamReader) -> Request:
        """One request, parsed by hand: request line, header lines, ``Content-Length`` bytes of body."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *lines = head[:-4].split("\r\n")
        headers = [(n, v.strip()) for n, _, v in (h.partition(":") for h in lines)]
        request = Request(line, headers, b"")
        request.body = await reader.readexactly(int(request.header("content-length") or 0))
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self.handler(self, reader, writer)
        writer.close()


@contextlib.asynccontextmanager
async def peer(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Peer]:
    served = Peer(handler)
    server = await asyncio.start_server(served._serve, "127.0.0.1", 0, ssl=tls)
    served.port = server.sockets[0].getsockname()[1]
    async with server:
        yield served
        server.close()


async def answer_each(peer: Peer, reader: Reader, writer: Writer) -> None:
    while True:
        await peer.read(reader)
        writer.write(OK)


async def test_a_post_carries_its_headers_body_host_and_length_exactly_as_given() -> None:
    async with peer(answer_each) as subscriber:
        pool = Pool(subscriber.url)
        answer = await pool.post({"ce-id": "a%20b", "Content-Type": "application/json"}, b'{"x": 1}')
        pool.close()
    assert answer.status == 200
    (request,) = subscriber.requests
    assert request.line == "POST /in?x=1 HTTP/1.1"
    assert request.header("host") == f"127.0.0.1:{subscriber.port}"
    assert request.header("ce-id") == "a%20b"
    assert request.header("content-type") == "application/json"
    assert request.header("content-length") == "8" and request.body == b'{"x": 1}'
    assert request.header("authorization") is None


async def test_credentials_in_the_url_become_a_basic_authorization_header() -> None:
    async with peer(answer_each) as subscriber:
        pool = Pool(f"http://sensor:p%40ss@127.0.0.1:{subscriber.port}/")
        await pool.post({}, b"")
        pool.close()
    (request,) = subscriber.requests
    assert request.line == "POST / HTTP/1.1"
    assert request.header("authorization") == "Basic " + base64.b64encode(b"sensor:p@ss").decode()
    assert request.header("host") == f"127.0.0.1:{subscriber.port}"


async def test_sequential_posts_share_one_kept_alive_connection() -> None:
    async with peer(answer_each) as subscriber:
        pool = Pool(subscriber.url)
        for n in range(20):
            assert (await pool.post({"ce-id": str(n)}, b"x")).status == 200
        pool.close()
    assert subscriber.connections == 1
    assert [r.header("ce-id") for r in subscriber.requests] == [str(n) for n in range(20)]


async def test_a_subscriber_that_answers_connection_close_gets_the_next_post_on_a_new_connection() -> None:
    async def close_after(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with peer(close_after) as subscriber:
        pool = Pool(subscriber.url)
        statuses = [(await pool.post({}, b"x")).status for _ in range(3)]
        pool.close()
    assert statuses == [202, 202, 202]
    assert subscriber.connections == 3


async def test_a_kept_connection_closed_unanswered_is_retried_once_on_a_new_one() -> None:
    """The race of a subscriber closing an idle connection as the next request is written: that
    request is sent again on a new connection rather than failing."""

    async def answer_one_then_drop(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        if peer.connections == 1:
            writer.write(OK)
            await peer.read(reader)  # the second request: closed without an answer
            return
        writer.write(OK)
        await writer.drain()

    async with peer(answer_one_then_drop) as subscriber:
        pool = Pool(subscriber.url)
        first = await pool.post({"ce-id": "1"}, b"x")
        second = await pool.post({"ce-id": "2"}, b"x")
        pool.close()
    assert (first.status, second.status) == (200, 200)
    assert [r.header("ce-id") for r in subscriber.requests] == ["1", "2", "2"]
    assert subscriber.connections == 2


async def test_a_fresh_connection_closed_unanswered_fails_without_a_second_try() -> None:
    async def drop(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)

    async with peer(drop) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(WireError, match="closed the connection before answering"):
            await pool.post({}, b"x")
        pool.close()
    assert len(subscriber.requests) == 1


async def test_answers_delimited_by_length_chunks_or_the_connection_close_are_all_read() -> None:
    answers = [
        b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nbroke",
        b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n4\r\n you\r\n0\r\n\r\n",
        b"HTTP/1.0 204 No Content\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nuntil the end",
    ]

    async def scripted(peer: Peer, reader: Reader, writer: Writer) -> None:
        while True:
            await peer.read(reader)
            writer.write(answers[len(peer.requests) - 1])
            if len(peer.requests) == len(answers):
                await writer.drain()
                return

    async with peer(scripted) as subscriber:
        pool = Pool(subscriber.url)
        got = [await pool.post({}, b"x") for _ in answers]
        pool.close()
    assert [(a.status, a.retry_after, a.body) for a in got] == [
        (500, "3", b"broke"),
        (400, None, b"not you"),
        (204, None, b""),
        (503, None, b"until the end"),
    ]
    assert subscriber.connections == 2  # HTTP/1.0 without keep-alive closes after its answer


async def test_informational_answers_before_the_final_one_are_skipped() -> None:
    async def early_hints(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await peer.read(reader)
        writer.write(OK)

    async with peer(early_hints) as subscriber:
        pool = Pool(subscriber.url)
        assert (await pool.post({}, b"x")).status == 201
        assert (await pool.post({}, b"y")).status == 200
        pool.close()
    assert subscriber.connections == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    ],
)
async def test_an_unreadable_answer_fails_that_post_and_the_next_goes_on_a_new_connection(
    garbage: bytes,
) -> None:
    async def first_garbage(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(garbage if peer.connections == 1 else OK)
        await writer.drain()
        await reader.read()

    async with peer(first_garbage) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(WireError):
            await pool.post({}, b"x")
        assert (await pool.post({}, b"x")).status == 200
        pool.close()
    assert subscriber.connections == 2


async def test_an_endless_answer_head_is_refused_once_past_its_limit() -> None:
    async def endless(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):
                writer.write(b"a" * 4096)
                await writer.drain()

    async with peer(endless) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(WireError, match=f"longer than {MAX_HEAD}"):
            await asyncio.wait_for(pool.post({}, b"x"), 10)
        pool.close()


async def test_of_a_huge_answer_body_only_the_first_bytes_are_kept() -> None:
    size = 5_000_000

    async def huge(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size)
        await peer.read(reader)
        writer.write(OK)

    async with peer(huge) as subscriber:
        pool = Pool(subscriber.url)
        answer = await pool.post({}, b"x")
        assert (answer.status, answer.body) == (413, b"z" * BODY_KEPT)
        assert (await pool.post({}, b"x")).status == 200
        pool.close()
    assert subscriber.connections == 1


async def test_bytes_sent_while_nothing_was_asked_retire_the_connection() -> None:
    async def chatty(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # one answer too many
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await peer.read(reader)
            writer.write(OK)

    async with peer(chatty) as subscriber:
        pool = Pool(subscriber.url)
        await pool.post({"ce-id": "1"}, b"x")
        await asyncio.sleep(0)  # the stray answer is read
        for _ in range(100):
            if not pool._idle or pool._idle[0].closed:
                break
            await asyncio.sleep(0.01)
        assert (await pool.post({"ce-id": "2"}, b"x")).status == 200
        pool.close()
    assert subscriber.connections == 2


@pytest.mark.parametrize(
    ("name", "value"), [("ce-x", "a\r\nX-Injected: 1"), ("ce-y", "a\nb"), ("ce-z", "a\0"), ("a:b", "v")]
)
async def test_a_header_that_would_break_the_request_is_refused_before_anything_is_sent(
    name: str, value: str
) -> None:
    async with peer(answer_each) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(ValueError, match="HTTP does not allow"):
            await pool.post({"ce-id": "1", name: value}, b"x")
        pool.close()
    assert subscriber.requests == []


async def test_a_cancelled_post_drops_its_connection_so_a_late_answer_is_never_taken_for_the_next() -> None:
    release = asyncio.Event()

    async def slow_first(peer: Peer, reader: Reader, writer: Writer) -> None:
        while True:
            request = await peer.read(reader)
            if request.header("ce-id") == "slow":
                await release.wait()
                writer.write(b"HTTP/1.1 500 Late\r\nContent-Length: 0\r\n\r\n")
            else:
                writer.write(OK)

    async with peer(slow_first) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post({"ce-id": "slow"}, b"x")
        release.set()
        assert (await pool.post({"ce-id": "next"}, b"x")).status == 200
        pool.close()
    assert subscriber.connections == 2


async def test_a_refused_connection_is_an_os_error_naming_the_address() -> None:
    async with peer(answer_each) as subscriber:
        url = subscriber.url
    pool = Pool(url)
    with pytest.raises(OSError, match=r"Connect call failed|refused"):
        await pool.post({}, b"x")
    pool.close()


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
async def test_an_https_subscriber_is_verified_against_the_trusted_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path, "sensor")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    async with peer(answer_each, served) as subscriber:
        url = f"https://localhost:{subscriber.port}/"
        untrusting = Pool(url)
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusting.post({}, b"x")
        untrusting.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the default verification trusts
        trusting = Pool(url)
        assert (await trusting.post({"ce-id": "1"}, b"secret")).status == 200
        trusting.close()
    assert [r.body for r in subscriber.requests] == [b"secret"]
    assert subscriber.requests[0].header("host") == f"localhost:{subscriber.port}"


def test_the_wire_works_the_same_on_uvloop() -> None:
    async def main() -> list[int]:
        async with peer(answer_each) as subscriber:
            pool = Pool(subscriber.url)
            statuses = [(await pool.post({"ce-id": str(n)}, b"x")).status for n in range(5)]
            pool.close()
            assert subscriber.connections == 1
            return statuses

    assert uvloop.run(main()) == [200] * 5


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
async def test_an_answer_cut_short_by_the_close_is_a_failure_not_an_acceptance(cut: bytes) -> None:
    async def cutting(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(cut)
        await writer.drain()

    async with peer(cutting) as subscriber:
        pool = Pool(subscriber.url)
        with pytest.raises(WireError, match=r"cut short|closed the connection"):
            await pool.post({}, b"x")
        pool.close()


async def test_an_idle_connection_past_its_keepalive_is_closed_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_wire, "KEEPALIVE", 0.05)
    async with peer(answer_each) as subscriber:
        pool = Pool(subscriber.url)
        await pool.post({}, b"x")
        await pool.post({}, b"x")
        await asyncio.sleep(0.1)  # idle past the (shortened) keep-alive
        await pool.post({}, b"x")
        pool.close()
    assert subscriber.connections == 2


async def test_a_proxy_named_in_the_environment_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    async with peer(answer_each) as subscriber:
        pool = Pool(subscriber.url)
        assert (await pool.post({}, b"direct")).status == 200
        pool.close()
    assert [r.body for r in subscriber.requests] == [b"direct"]


@pytest.mark.parametrize(
    "lenient",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n",
    ],
)
async def test_answers_a_lenient_reader_takes_are_read_as_their_status(lenient: bytes) -> None:
    async def odd(peer: Peer, reader: Reader, writer: Writer) -> None:
        await peer.read(reader)
        writer.write(lenient)
        await writer.drain()
        await reader.read()

    async with peer(odd) as subscriber:
        pool = Pool(subscriber.url)
        assert (await pool.post({}, b"x")).status == 200
        pool.close()


async def test_a_password_without_a_user_name_still_goes_as_basic_authorization() -> None:
    async with peer(answer_each) as subscriber:
        pool = Pool(f"http://:s3cret@127.0.0.1:{subscriber.port}/")
        await pool.post({}, b"")
        pool.close()
    assert subscriber.requests[0].header("authorization") == "Basic " + base64.b64encode(b":s3cret").decode()
