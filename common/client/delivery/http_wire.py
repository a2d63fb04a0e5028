"""HTTP/1.1 POSTs to one subscriber over kept-alive connections: each request written whole, each
answer read with ``httptools`` (llhttp, the parser uvicorn uses).

Delivery needs one thing of HTTP: POST these bytes with these headers, tell the status (and a
``Retry-After``). Through aiohttp's client that costs about 170 us of CPU per request on this machine;
written here, about 20 us (``bench/client_hop.py`` measures the client's hop, ``bench/nats_e2e.py``
the whole path). What is left out on purpose: redirects (never followed), proxies from the
environment (aiohttp ignored them too), compression, cookies, HTTP/2.

Each connection carries one request at a time. An idle connection is reused for at most
``KEEPALIVE`` seconds; one that the subscriber closed while idle is noticed and never written to,
and a request that finds its reused connection closed before any byte of an answer is sent once more
on a new one (the subscriber may then see it twice: delivery is at least once).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httptools
from yarl import URL

KEEPALIVE = 15.0
"""Seconds an idle connection is kept for reuse (aiohttp's default too; servers keep theirs longer)."""
MAX_IDLE = 64
"""Idle connections kept per subscriber at most; more are closed as they come back."""
BODY_KEPT = 4096
"""Bytes of an answer's body kept (for the log); the rest is read and discarded."""
MAX_HEAD = 64 * 1024
"""Bytes of an answer's status line and headers at most; a longer head is refused and closed."""
USER_AGENT = "gateways-client"


class WireError(Exception):
    """The request could not be sent or its answer not read: refused, reset, closed, unreadable."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes
    """The body's first ``BODY_KEPT`` bytes."""


class Target:
    """Where a subscriber's URL points, and the request head every POST to it starts with."""

    def __init__(self, address: str) -> None:
        url = URL(address)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {url.with_password(None) if url.password else url}")
        self.host = url.raw_host or url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.tls = url.scheme == "https"
        lines = [
            f"POST {url.raw_path_qs or '/'} HTTP/1.1",
            f"Host: {url.host_port_subcomponent}",
            f"User-Agent: {USER_AGENT}",
        ]
        if url.user is not None or url.password is not None:
            credentials = f"{url.user or ''}:{url.password or ''}".encode()
            lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}")
        self.head = "\r\n".join(lines) + "\r\n"


def request_bytes(target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request: ``target``'s head, ``headers``, ``Content-Length``; ``ValueError`` if a header
    would break the head (a CR, LF or NUL in a name or value, or a colon in a name)."""
    text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if (
        text.count("\n") != len(headers)
        or text.count("\r") != len(headers)
        or "\0" in text
        or any(":" in name or not name for name in headers)
    ):
        bad = next(name for name, value in headers.items() if not _header_safe(name, value))
        raise ValueError(f"header {bad!r} holds a character HTTP does not allow there")
    head = f"{target.head}{text}Content-Length: {len(body)}\r\n\r\n".encode()
    return head + body


def _header_safe(name: str, value: str) -> bool:
    return bool(name) and not any(c in name for c in ":\r\n\0") and not any(c in value for c in "\r\n\0")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        # As aiohttp's client reads answers: bare LF line ends, folded or odd header values, spaces
        # after a chunk size (RFC 9112 asks a client to take what a server plausibly meant).
        self._parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True
        )
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._status = 0
        self._retry_after: str | None = None
        self._body: list[bytes] = []
        self._kept = 0
        self._head = 0
        self._in_head = True
        self._framed = False
        """The answer says where its body ends (a length or chunks), so a close before is a fault."""
        self.answered = False
        """Some byte of the current request's answer arrived."""
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # nothing was asked: a confused or hostile server
            self.close()
            return
        self.answered = True
        if self._in_head:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(WireError("the subscriber switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(WireError(f"unreadable answer: {exc}"))
            return
        if self._in_head and self._head > MAX_HEAD:  # the head is still not over
            self._fail(WireError(f"the answer's head is longer than {MAX_HEAD} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._in_head and self._status >= 200 and not self._framed:  # a body until the close
            waiter.set_result(self._answer())
        elif not self._in_head:
            waiter.set_exception(WireError(f"the answer (HTTP {self._status}) was cut short"))
        elif exc is not None:
            waiter.set_exception(WireError(f"{type(exc).__name__}: {exc}"))
        else:
            waiter.set_exception(WireError("the subscriber closed the connection before answering"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._status, self._retry_after, self._body, self._kept = 0, None, [], 0
        self._in_head, self._framed = True, False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif name in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._in_head = False

    def on_body(self, body: bytes) -> None:
        if self._kept < BODY_KEPT:
            piece = body[: BODY_KEPT - self._kept]
            self._body.append(piece)
            self._kept += len(piece)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # informational (103 Early Hints, a stray 100): the answer follows
            self._head = 0
            return
        waiter = self._waiter
        if waiter is None or waiter.done():  # a second answer to one request
            self.close()
            return
        if not self._parser.should_keep_alive():
            self.close()
        waiter.set_result(self._answer())

    # use
    @property
    def usable(self) -> bool:
        """Open, and not being closed (asyncio marks a transport closing a moment before it says so)."""
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    async def send(self, request: bytes) -> Answer:
        assert self._transport is not None
        if self._transport.is_closing():  # a write now would go nowhere and wait for the timeout
            self.closed = True
            raise WireError("the subscriber closed the connection before answering")
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.answered, self._head, self._in_head = False, 0, True
        self._transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _answer(self) -> Answer:
        return Answer(self._status, self._retry_after, b"".join(self._body))

    def _fail(self, error: WireError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()


class Pool:
    """Kept-alive connections to one subscriber; ``post`` takes an idle one or opens one."""

    def __init__(self, address: str) -> None:
        self.target = Target(address)
        self._tls = ssl.create_default_context() if self.target.tls else None
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False

    async def post(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """POST ``body``; ``WireError`` or ``OSError`` if it could not be sent or answered,
        ``ValueError`` if ``headers`` cannot be written. Cancelled (a timeout), the connection is
        dropped: its answer could still come and would be mistaken for the next request's."""
        request = request_bytes(self.target, headers, body)
        connection, reused = await self._take()
        try:
            try:
                answer = await connection.send(request)
            except WireError:
                if not reused or connection.answered:
                    raise
                # Closed while idle, in the same instant as the write: once more, on a new one.
                connection.abort()
                self._busy.discard(connection)
                connection = await self._open()
                answer = await connection.send(request)
        except BaseException:
            connection.abort()
            self._busy.discard(connection)
            raise
        self._give_back(connection)
        return answer

    def close(self) -> None:
        """Close every connection, idle or busy (a request under way fails)."""
        self._closed = True
        for connection in (*self._idle, *self._busy):
            connection.abort()
        self._idle.clear()
        self._busy.clear()

    async def _take(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < KEEPALIVE:
                self._busy.add(connection)
                return connection, True
            connection.close()
        return await self._open(), False

    async def _open(self) -> _Connection:
        if self._closed:
            raise WireError("the delivery is closing")
        loop = asyncio.get_running_loop()
        target = self.target
        _, connection = await loop.create_connection(
            _Connection,
            target.host,
            target.port,
            ssl=self._tls,
            server_hostname=target.host if self._tls else None,
        )
        self._busy.add(connection)
        return connection

    def _give_back(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if not connection.usable or self._closed or len(self._idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        # Close the longest idle ones past their time (checked as connections come back and are
        # taken; a subscriber that goes quiet keeps its few until it closes them or the next event).
        while self._idle and time.monotonic() - self._idle[0].idle_since >= KEEPALIVE:
            with contextlib.suppress(Exception):
                self._idle.pop(0).close()
