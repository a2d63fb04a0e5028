"""An MQTT 3.1.1 client on bare asyncio streams: enough to check a broker and store and read messages.

It sends ``CONNECT`` (clean session) and requires a ``CONNACK`` that accepts it; publishes at QoS 0 or
1 (waiting for the ``PUBACK``), optionally retained; subscribes (waiting for the ``SUBACK``); and reads
delivered ``PUBLISH`` packets, acknowledging QoS 1 ones. ``DISCONNECT`` ends a session cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tests.harness.brokers_wire import WireError, tcp

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14
PROTOCOL_LEVEL = 4
"""MQTT 3.1.1."""
CLEAN_SESSION = 0x02
KEEPALIVE = 60
SUBACK_FAILURE = 0x80


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _remaining_length(size: int) -> bytes:
    out = bytearray()
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _remaining_length(len(body)) + body


@dataclass(frozen=True)
class MqttMessage:
    """One delivered ``PUBLISH``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttClient:
    """One connected MQTT session; use ``mqtt_client`` to open it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._packet_id = 0
        self._messages: list[MqttMessage] = []

    async def _send(self, packet: bytes) -> None:
        self._writer.write(packet)
        await self._writer.drain()

    async def _read(self) -> tuple[int, int, bytes]:
        first = (await self._reader.readexactly(1))[0]
        size, shift = 0, 0
        while True:
            digit = (await self._reader.readexactly(1))[0]
            size |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        return first >> 4, first & 0x0F, await self._reader.readexactly(size)

    async def _expect(self, kind: int) -> bytes:
        """Read until a packet of ``kind``, keeping any ``PUBLISH`` that arrives first."""
        while True:
            got, flags, body = await self._read()
            if got == kind:
                return body
            if got != PUBLISH:
                raise WireError(f"MQTT packet type {got} while waiting for type {kind}")
            await self._keep(flags, body)

    async def _keep(self, flags: int, body: bytes) -> None:
        (length,) = struct.unpack_from(">H", body)
        topic, rest = body[2 : 2 + length].decode(), body[2 + length :]
        qos = flags >> 1 & 0x03
        if qos:
            packet_id, rest = rest[:2], rest[2:]
            await self._send(_packet(PUBACK, 0, packet_id))
        self._messages.append(MqttMessage(topic, rest, qos, bool(flags & 0x01)))

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    async def connect(self, client_id: str) -> None:
        """``CONNECT`` with a clean session; raises unless the ``CONNACK`` accepts it."""
        header = _string("MQTT") + struct.pack(">BBH", PROTOCOL_LEVEL, CLEAN_SESSION, KEEPALIVE)
        await self._send(_packet(CONNECT, 0, header + _string(client_id)))
        kind, _, body = await self._read()
        if kind != CONNACK or len(body) != 2:
            raise WireError(f"MQTT answered CONNECT with packet type {kind}")
        if body[1]:
            raise WireError(f"MQTT CONNACK refused the connection: return code {body[1]}")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; at QoS 1 returns once the broker's ``PUBACK`` for it arrives."""
        body = _string(topic)
        packet_id = self._next_id()
        if qos:
            body += struct.pack(">H", packet_id)
        await self._send(_packet(PUBLISH, qos << 1 | int(retain), body + payload))
        if qos:
            while struct.unpack(">H", await self._expect(PUBACK))[0] != packet_id:
                pass

    async def subscribe(self, topic: str, *, qos: int = 1) -> None:
        """Subscribe to ``topic`` (a filter); raises when the ``SUBACK`` refuses it."""
        packet_id = self._next_id()
        await self._send(
            _packet(SUBSCRIBE, 0x02, struct.pack(">H", packet_id) + _string(topic) + bytes([qos]))
        )
        body = await self._expect(SUBACK)
        if body[2:] == bytes([SUBACK_FAILURE]):
            raise WireError(f"MQTT SUBACK refused {topic!r}")

    async def next_message(self) -> MqttMessage:
        """The next delivered message (wrap in ``asyncio.timeout``)."""
        while not self._messages:
            _, flags, body = await self._read()
            await self._keep(flags, body)
        return self._messages.pop(0)

    async def disconnect(self) -> None:
        """End the session cleanly."""
        await self._send(_packet(DISCONNECT, 0, b""))


@contextlib.asynccontextmanager
async def mqtt_client(port: int, client_id: str = "broker-harness") -> AsyncIterator[MqttClient]:
    """A connected MQTT session on ``127.0.0.1:port``, disconnected on exit."""
    async with tcp(port) as (reader, writer):
        client = MqttClient(reader, writer)
        await client.connect(client_id)
        yield client
        with contextlib.suppress(OSError):
            await client.disconnect()


async def mqtt_ready(port: int) -> None:
    """Require a ``CONNACK`` that accepts a clean session."""
    async with mqtt_client(port, "harness-probe"):
        pass
