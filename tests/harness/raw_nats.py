"""A NATS subscriber on bare asyncio streams, so tests judge published messages without nats-py.

It speaks the client protocol itself: reads the server's ``INFO``, sends ``CONNECT`` (headers on),
``SUB <subject> 1`` and ``PING``, and counts as ready at the ``PONG``; it answers the server's ``PING``
with ``PONG``. ``MSG`` and ``HMSG`` frames are parsed by their byte counts, the header block
(``NATS/1.0[ status]\\r\\nName: value\\r\\n...\\r\\n\\r\\n``) counted in the ``HMSG`` lengths, and each
message is kept with its headers in the order and case they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tests.harness.processes import READY_TIMEOUT

CRLF = b"\r\n"
CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false,"protocol":1}\r\n'
SID = "1"
CONTROL_LINE_LIMIT = 1024 * 1024
"""Bytes a control line (``MSG subject sid reply size``) may take before the reader gives up."""

Headers = tuple[tuple[str, str], ...]


class NatsProtocolError(Exception):
    """The server sent something the NATS client protocol does not allow (or an ``-ERR``)."""


@dataclass(frozen=True)
class RawMessage:
    """One delivered message exactly as it came off the wire."""

    subject: str
    headers: Headers
    """``(name, value)`` pairs in the order sent, names in the case sent; empty for a ``MSG``."""
    status: str
    """The header block's first line (``NATS/1.0``, ``NATS/1.0 503``...); empty for a ``MSG``."""
    payload: bytes
    reply_to: str | None = None
    header_block: bytes = b""
    """The ``HMSG`` header bytes as received, final blank line included; empty for a ``MSG``."""

    @property
    def status_code(self) -> int | None:
        """The status line's code (``NATS/1.0 503`` -> 503), None when it has none."""
        parts = self.status.split(maxsplit=2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def values(self, name: str) -> list[str]:
        """Every value sent under ``name`` (case-insensitive, as NATS header names are), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


def parse_header_block(block: bytes) -> tuple[str, Headers]:
    """The status line and the headers of an ``HMSG`` header block."""
    if not block.startswith(b"NATS/") or not block.endswith(CRLF + CRLF):
        raise NatsProtocolError(f"not a NATS header block: {block!r}")
    status, *lines = block[: -2 * len(CRLF)].split(CRLF)
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise NatsProtocolError(f"not a header line: {line!r}")
        headers.append((_text(name), _text(value.lstrip(b" \t"))))
    return _text(status), tuple(headers)


class RawNatsReader:
    """One connection subscribed to ``subject``; ``messages`` fills as messages arrive."""

    def __init__(self, port: int, subject: str, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.subject = subject
        self.info: dict[str, Any] = {}
        """The server's ``INFO``, the latest one if it sent more."""
        self.messages: list[RawMessage] = []
        self.errors: list[str] = []
        """Every ``-ERR`` the server sent, its text unquoted."""
        self.pings_answered = 0
        self.ready = False
        """True once the server answered the first ``PING``: the subscription is in place."""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._failure: BaseException | None = None

    async def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Connect, subscribe and wait for the ``PONG`` that says the subscription is in place."""
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=CONTROL_LINE_LIMIT)
        self._reader, self._writer = reader, writer
        async with asyncio.timeout(timeout):
            op, args = await self._control_line()
            if op != "INFO":
                raise NatsProtocolError(f"expected INFO first, got {op} {args}")
            self.info = json.loads(args)
            writer.write(CONNECT + f"SUB {self.subject} {SID}\r\nPING\r\n".encode())
            await writer.drain()
            self._task = asyncio.create_task(self._run(), name=f"raw-nats-reader:{self.subject}")
            async with self._changed:
                await self._changed.wait_for(lambda: self.ready or self._failure is not None)
        if not self.ready:
            raise NatsProtocolError(f"no PONG after SUB: {self._failure!r}, server errors {self.errors}")

    async def close(self) -> None:
        """Stop reading and close the connection."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[RawMessage]:
        """The messages once there are at least ``count``; AssertionError after ``timeout``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.messages) >= count or self._failure is not None)
        except TimeoutError:
            got = len(self.messages)
            raise AssertionError(
                f"not within {timeout}s: {count} messages on {self.subject} (got {got})"
            ) from None
        if len(self.messages) < count:
            raise AssertionError(f"the reader stopped after {len(self.messages)} messages: {self._failure!r}")
        return list(self.messages)

    async def _run(self) -> None:
        try:
            while True:
                await self._frame()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            async with self._changed:
                self._changed.notify_all()

    async def _frame(self) -> None:
        op, args = await self._control_line()
        if op == "MSG":
            await self._message(args.split(), with_headers=False)
        elif op == "HMSG":
            await self._message(args.split(), with_headers=True)
        elif op == "PING":
            assert self._writer is not None
            self._writer.write(b"PONG\r\n")
            await self._writer.drain()
            self.pings_answered += 1
        elif op == "PONG" and not self.ready:
            self.ready = True
            async with self._changed:
                self._changed.notify_all()
        elif op == "INFO":
            self.info = json.loads(args)
        elif op == "-ERR":
            self.errors.append(args.strip("'"))
        elif op not in ("+OK", "PONG"):
            raise NatsProtocolError(f"unknown operation {op!r} {args!r}")

    async def _control_line(self) -> tuple[str, str]:
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(CRLF)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError(
                f"the server closed the connection (partial line {exc.partial!r})"
            ) from None
        op, _, args = _text(line[: -len(CRLF)]).partition(" ")
        return op.upper(), args.strip()

    async def _message(self, args: list[str], *, with_headers: bool) -> None:
        sizes = 2 if with_headers else 1
        if len(args) not in (2 + sizes, 3 + sizes) or not all(a.isdigit() for a in args[-sizes:]):
            raise NatsProtocolError(f"bad {'HMSG' if with_headers else 'MSG'} arguments: {args}")
        subject, reply_to = args[0], (args[2] if len(args) == 3 + sizes else None)
        total = int(args[-1])
        header_size = int(args[-2]) if with_headers else 0
        if header_size > total:
            raise NatsProtocolError(f"header bytes {header_size} exceed total bytes {total}")
        assert self._reader is not None
        body = await self._reader.readexactly(total + len(CRLF))
        if body[total:] != CRLF:
            raise NatsProtocolError(f"message of {total} bytes not followed by CRLF: {body[total:]!r}")
        block, payload = body[:header_size], body[header_size:total]
        status, headers = parse_header_block(block) if with_headers else ("", ())
        self.messages.append(RawMessage(subject, headers, status, payload, reply_to, block))
        async with self._changed:
            self._changed.notify_all()


@contextlib.asynccontextmanager
async def raw_nats_subscriber(
    port: int, subject: str, *, host: str = "127.0.0.1"
) -> AsyncIterator[RawNatsReader]:
    """A reader subscribed to ``subject`` on the nats-server at ``host:port``, ready once entered."""
    reader = RawNatsReader(port, subject, host=host)
    try:
        await reader.start()
        yield reader
    finally:
        await reader.close()
