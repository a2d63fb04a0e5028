"""Scripted HTTP subscribers on bare asyncio sockets that read each request by hand (strictly, as
HTTP/1.1 says) and answer it byte for byte, and the real gateway processes they serve: what the
client's HTTP delivery is tried against from the outside (``tests/integration/test_http_delivery_*``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.processes import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQUEST_LINE = re.compile(rb"POST (/[!-~]*) HTTP/1\.1")
QUICK_STOP = ("--grace", "0.5")
"""For a gateway left with undelivered events: its stop need not wait the default 10 s for them."""
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@dataclass
class Request:
    """One request as read off the wire, and what was wrong with it as HTTP/1.1."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float
    problems: list[str]

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    @property
    def id(self) -> str:
        return (self.header("ce-id") or "").removeprefix("hook:")


Serve = Callable[["Subscriber", Reader, Writer], Awaitable[None]]


@dataclass
class Subscriber:
    """A subscriber on 127.0.0.1; ``serve`` runs per connection. ``accepted`` holds the ids it
    answered 2xx in full, ``answers`` every (time, status) it finished writing."""

    serve: Serve
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    path: str = "/in"
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    answers: list[tuple[float, int]] = field(default_factory=list)
    connections: int = 0
    _writers: set[Writer] = field(default_factory=set)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)

    async def stop(self) -> None:
        """Stop listening and close every connection: connecting is refused until ``start``."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def tries(self, request: Request) -> int:
        """How many times this request's event has arrived so far (1 for its first)."""
        return sum(1 for r in self.requests if r.id == request.id)

    def ids(self) -> Counter[str]:
        return Counter(r.id for r in self.requests)

    async def read(self, reader: Reader, first: bytes = b"") -> Request:
        """One request, by hand: its request line, header lines and ``Content-Length`` bytes of body,
        each checked against HTTP/1.1's grammar (problems are noted, not raised); ``first`` is its
        first byte when the caller read it already."""
        head = first + await reader.readuntil(b"\r\n\r\n")
        problems: list[str] = []
        line, *lines = head[:-4].split(b"\r\n")
        if not REQUEST_LINE.fullmatch(line):
            problems.append(f"request line {line!r}")
        headers: list[tuple[str, str]] = []
        for raw in lines:
            name, colon, value = raw.partition(b":")
            value = value.strip(b" \t")
            if not colon or not TOKEN.fullmatch(name):
                problems.append(f"header line {raw!r}")
            if not value or not all(0x20 <= c < 0x7F or c == 0x09 for c in value):
                problems.append(f"header value {raw!r}")
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        names = [n.lower() for n, _ in headers]
        problems += [f"{n} given {names.count(n)} times" for n in sorted(set(names)) if names.count(n) > 1]
        problems += [f"no {n}" for n in ("host", "content-length") if n not in names]
        problems += [f"{n} sent" for n in ("transfer-encoding", "expect") if n in names]
        length = next((v for n, v in headers if n.lower() == "content-length"), "0")
        if not length.isdigit():
            problems.append(f"content-length {length!r}")
            length = "0"
        body = await reader.readexactly(int(length))
        request = Request(line.decode("latin-1"), headers, body, time.monotonic(), problems)
        self.requests.append(request)
        return request

    async def answer(self, writer: Writer, request: Request, data: bytes, status: int) -> None:
        """Write a whole answer; a 2xx counts ``request`` as accepted once it is written."""
        writer.write(data)
        await writer.drain()
        self.answers.append((time.monotonic(), status))
        if 200 <= status < 300:
            self.accepted.append(request.id)

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                await self.serve(self, reader, writer)
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


async def accept_each(sub: Subscriber, reader: Reader, writer: Writer) -> None:
    while True:
        request = await sub.read(reader)
        await sub.answer(writer, request, OK, 200)


def reset(writer: Writer) -> None:
    """Close with a TCP RST (``SO_LINGER`` 0), as a crashed or impatient server does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def subscribers(*subs: Subscriber) -> AsyncIterator[None]:
    for sub in subs:
        await sub.start()
    try:
        yield
    finally:
        for sub in subs:
            await sub.stop()


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, urls: Sequence[str], *hook: str, pod: bool = False, args: Sequence[str] = ()
) -> AsyncIterator[tuple[Gateway, str]]:
    """A webhook gateway (``gateway run``, or a pod's two processes) delivering to ``urls``; yields it
    and the webhook's URL. ``hook`` adds lines to the webhook's config."""
    port = free_port()
    config = tmp_path / "cm.yaml"
    lines = ["endpoint: /hook", "method: POST", f'port: "{port}"', *hook]
    config.write_text(configmap(hook="\n".join(lines)))
    gw = Gateway(tmp_path, config, list(urls), pod=pod, client_args=list(args))
    try:
        await gw.start(wait_port=port)
        yield gw, f"http://127.0.0.1:{port}/hook"
    finally:
        await gw.stop()


async def post(
    hook: str, *ids: str, body: bytes = b'{"n": 1}', content_type: str = "application/json"
) -> None:
    """POST one webhook call per id (the id becomes the event id ``hook:<id>``); each must get 200."""
    async with aiohttp.ClientSession() as http:
        for request_id in ids:
            headers = {"X-Request-Id": request_id, "Content-Type": content_type}
            async with http.post(hook, data=body, headers=headers) as response:
                await response.read()
                assert response.status == 200, (request_id, response.status)


async def status(gw: Gateway) -> dict[str, dict[str, Any]]:
    """The client's ``/readyz`` subscribers, by URL as displayed."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gw.ops_port}/readyz") as response,
    ):
        body = await response.json()
    return {s["subscriber"]: s for s in body["subscribers"]}


async def delivered(gw: Gateway, sub: Subscriber, count: int) -> bool:
    return bool((await status(gw))[sub.url]["delivered"] >= count)


def client_log(gw: Gateway) -> str:
    assert gw.client is not None
    return gw.client.text()


def rss_kib(gw: Gateway) -> int:
    assert gw.client is not None and gw.client.proc is not None
    for line in Path(f"/proc/{gw.client.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def first_try(answer: Callable[[Subscriber, Request, Writer], Awaitable[bool]]) -> Serve:
    """A subscriber that answers each event's first arrival with ``answer`` (which says whether the
    connection goes on) and every later arrival with a plain 200."""

    async def serve(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        while True:
            request = await sub.read(reader)
            if sub.tries(request) == 1:
                if not await answer(sub, request, writer):
                    return
            else:
                await sub.answer(writer, request, OK, 200)

    return serve


def always(answer: Callable[[Subscriber, Request, Writer], Awaitable[bool]]) -> Serve:
    async def serve(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        while await answer(sub, await sub.read(reader), writer):
            pass

    return serve
