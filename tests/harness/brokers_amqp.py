"""An AMQP 0-9-1 client on bare asyncio streams: the connection handshake and a durable queue's basics.

``amqp_connection`` sends the protocol header and walks ``Start``/``StartOk`` (PLAIN), ``Tune``/``TuneOk``
(no heartbeats) and ``Open``/``OpenOk``, then opens channel 1; that handshake is also RabbitMQ's
readiness check, since its port opens a moment before it serves. On the channel a test can declare a
queue, turn on publisher confirms, publish (persistent, to the default exchange) and ``Basic.Get``.
A ``Close`` from the server raises ``AmqpClosed`` with its reply code and text.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

from tests.harness.brokers_wire import WireError, tcp

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
CHANNEL = 1

START, START_OK, TUNE, TUNE_OK = (10, 10), (10, 11), (10, 30), (10, 31)
OPEN, OPEN_OK, CLOSE, CLOSE_OK = (10, 40), (10, 41), (10, 50), (10, 51)
CHANNEL_OPEN, CHANNEL_OPEN_OK, CHANNEL_CLOSE = (20, 10), (20, 11), (20, 40)
QUEUE_DECLARE, QUEUE_DECLARE_OK = (50, 10), (50, 11)
BASIC = 60
BASIC_PUBLISH, BASIC_GET, BASIC_GET_OK, BASIC_GET_EMPTY, BASIC_ACK = (
    (60, 40),
    (60, 70),
    (60, 71),
    (60, 72),
    (60, 80),
)
CONFIRM_SELECT, CONFIRM_SELECT_OK = (85, 10), (85, 11)
DELIVERY_MODE_FLAG = 1 << 12
PERSISTENT = 2

Method = tuple[int, int]


class AmqpClosed(WireError):
    """The server closed the connection or the channel (``Connection.Close`` / ``Channel.Close``)."""


def _short(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def _long(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _method(method: Method, args: bytes = b"") -> bytes:
    return struct.pack(">HH", *method) + args


class AmqpConnection:
    """One AMQP connection with channel 1 open; use ``amqp_connection`` to open it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frame_max = 131072
        self._confirms = False
        self._published = 0

    async def _send(self, kind: int, channel: int, payload: bytes) -> None:
        self._writer.write(struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([FRAME_END]))
        await self._writer.drain()

    async def _call(self, method: Method, args: bytes = b"", channel: int = CHANNEL) -> None:
        await self._send(FRAME_METHOD, channel, _method(method, args))

    async def _frame(self) -> tuple[int, bytes]:
        while True:
            kind, _, size = struct.unpack(">BHI", await self._reader.readexactly(7))
            payload = await self._reader.readexactly(size)
            if (await self._reader.readexactly(1))[0] != FRAME_END:
                raise WireError("AMQP frame without its end octet")
            if kind != FRAME_HEARTBEAT:
                return kind, payload

    async def _expect(self, *wanted: Method) -> tuple[Method, bytes]:
        """The next method frame, which must be one of ``wanted``; a server ``Close`` raises."""
        kind, payload = await self._frame()
        if kind != FRAME_METHOD:
            raise WireError(f"AMQP frame type {kind} while waiting for {wanted}")
        method: Method = struct.unpack_from(">HH", payload)
        args = payload[4:]
        if method in (CLOSE, CHANNEL_CLOSE) and method not in wanted:
            (code,) = struct.unpack_from(">H", args)
            text = args[3 : 3 + args[2]].decode(errors="replace")
            if method == CLOSE:
                await self._call(CLOSE_OK, channel=0)
            raise AmqpClosed(f"AMQP server closed with {code}: {text}")
        if method not in wanted:
            raise WireError(f"AMQP method {method} while waiting for {wanted}")
        return method, args

    async def handshake(self, user: str, password: str, vhost: str) -> None:
        """Protocol header through ``OpenOk`` on channel 0, then ``Channel.Open`` for channel 1."""
        self._writer.write(PROTOCOL_HEADER)
        first = await self._reader.readexactly(1)
        if first == b"A":  # the server's own protocol header: it speaks another version
            raise WireError(f"AMQP server refused 0-9-1, offering {first + await self._reader.read(7)!r}")
        kind, channel, size = struct.unpack(">BHI", first + await self._reader.readexactly(6))
        payload = await self._reader.readexactly(size + 1)
        if (kind, channel, struct.unpack_from(">HH", payload)) != (FRAME_METHOD, 0, START):
            raise WireError("AMQP server did not begin with Connection.Start")
        response = f"\0{user}\0{password}".encode()
        await self._call(START_OK, _long(b"") + _short("PLAIN") + _long(response) + _short("en_US"), 0)
        _, tune = await self._expect(TUNE)
        channel_max, frame_max, _ = struct.unpack_from(">HIH", tune)
        self._frame_max = frame_max or self._frame_max
        await self._call(TUNE_OK, struct.pack(">HIH", channel_max, self._frame_max, 0), 0)
        await self._call(OPEN, _short(vhost) + _short("") + b"\0", 0)
        await self._expect(OPEN_OK)
        await self._call(CHANNEL_OPEN, _short(""))
        await self._expect(CHANNEL_OPEN_OK)

    async def declare_queue(self, name: str, *, durable: bool = True) -> int:
        """Declare ``name`` (durable by default); the number of messages it holds."""
        await self._call(
            QUEUE_DECLARE, struct.pack(">H", 0) + _short(name) + bytes([durable << 1]) + _long(b"")
        )
        _, args = await self._expect(QUEUE_DECLARE_OK)
        (messages,) = struct.unpack_from(">I", args, 1 + args[0])
        return int(messages)

    async def confirm_select(self) -> None:
        """Turn on publisher confirms: ``publish`` then waits for the broker's ``Basic.Ack``."""
        await self._call(CONFIRM_SELECT, b"\0")
        await self._expect(CONFIRM_SELECT_OK)
        self._confirms = True

    async def publish(self, queue: str, body: bytes, *, persistent: bool = True) -> None:
        """Publish ``body`` to ``queue`` through the default exchange (persistent unless told not)."""
        await self._call(BASIC_PUBLISH, struct.pack(">H", 0) + _short("") + _short(queue) + b"\0")
        flags, properties = (DELIVERY_MODE_FLAG, bytes([PERSISTENT])) if persistent else (0, b"")
        await self._send(FRAME_HEADER, CHANNEL, struct.pack(">HHQH", BASIC, 0, len(body), flags) + properties)
        step = self._frame_max - 8
        for start in range(0, len(body), step):
            await self._send(FRAME_BODY, CHANNEL, body[start : start + step])
        if self._confirms:
            self._published += 1
            _, args = await self._expect(BASIC_ACK)
            (tag,) = struct.unpack_from(">Q", args)
            if tag != self._published:
                raise WireError(f"AMQP confirm for delivery {tag}, expected {self._published}")

    async def get(self, queue: str) -> bytes | None:
        """``Basic.Get`` with automatic ack: the next message's body, or None when ``queue`` is empty."""
        await self._call(BASIC_GET, struct.pack(">H", 0) + _short(queue) + b"\1")
        method, _ = await self._expect(BASIC_GET_OK, BASIC_GET_EMPTY)
        if method == BASIC_GET_EMPTY:
            return None
        kind, header = await self._frame()
        if kind != FRAME_HEADER:
            raise WireError(f"AMQP frame type {kind} where a content header belongs")
        (size,) = struct.unpack_from(">Q", header, 4)
        body = b""
        while len(body) < size:
            kind, chunk = await self._frame()
            if kind != FRAME_BODY:
                raise WireError(f"AMQP frame type {kind} where a content body belongs")
            body += chunk
        return body

    async def close(self) -> None:
        """``Connection.Close`` and wait for ``CloseOk``."""
        await self._call(CLOSE, struct.pack(">H", 200) + _short("bye") + struct.pack(">HH", 0, 0), 0)
        await self._expect(CLOSE_OK)


@contextlib.asynccontextmanager
async def amqp_connection(
    port: int, *, user: str = "guest", password: str = "guest", vhost: str = "/"
) -> AsyncIterator[AmqpConnection]:
    """An AMQP connection to ``127.0.0.1:port`` with channel 1 open, closed cleanly on exit."""
    async with tcp(port) as (reader, writer):
        connection = AmqpConnection(reader, writer)
        await connection.handshake(user, password, vhost)
        yield connection
        with contextlib.suppress(OSError, EOFError, WireError):
            await connection.close()


async def amqp_ready(port: int) -> None:
    """Require the whole connection handshake, through ``Connection.OpenOk`` and ``Channel.OpenOk``."""
    async with amqp_connection(port):
        pass
