"""Readiness checks that speak each broker's own protocol on bare asyncio streams (no client library).

``nats_ping`` reads NATS's ``INFO`` and gets a ``PONG`` for its ``PING``; ``KafkaWire`` sends the Kafka
``ApiVersions``, ``Metadata`` and ``CreateTopics`` requests (version 0, which every broker answers).
MQTT and AMQP, which tests also use to store and read back messages, have modules of their own
(``brokers_mqtt``, ``brokers_amqp``). A peer that answers with the wrong bytes raises ``WireError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

HOST = "127.0.0.1"
NATS_CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n'
KAFKA_API_VERSIONS = 18
KAFKA_METADATA = 3
KAFKA_CREATE_TOPICS = 19
KAFKA_CLIENT_ID = "broker-harness"


class WireError(ValueError):
    """The peer answered, but not as its protocol says it must."""


@contextlib.asynccontextmanager
async def tcp(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TCP connection to ``127.0.0.1:port``, closed on exit."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def nats_ping(port: int) -> None:
    """Read the server's ``INFO``, send ``CONNECT`` and ``PING``, and require its ``PONG``."""
    async with tcp(port) as (reader, writer):
        info = await reader.readline()
        if not info.startswith(b"INFO "):
            raise WireError(f"NATS greeting is not INFO: {info[:80]!r}")
        writer.write(NATS_CONNECT)
        await writer.drain()
        while (line := await reader.readline()) != b"PONG\r\n":
            if not line or line.startswith(b"-ERR"):
                raise WireError(f"NATS answered PING with {line[:80]!r}")


@dataclass(frozen=True)
class KafkaBroker:
    """One broker as a Kafka ``Metadata`` response lists it."""

    node_id: int
    host: str
    port: int


@dataclass(frozen=True)
class KafkaMetadata:
    """A ``Metadata`` response: the brokers with their advertised addresses, and each topic's partitions."""

    brokers: list[KafkaBroker]
    topics: dict[str, int]


class _Fields:
    """Reads Kafka's big-endian fields off a response, front to back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._offset)
        self._offset += struct.calcsize(fmt)
        return int(value)

    def skip(self, fmt: str) -> None:
        self._offset += struct.calcsize(fmt)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str:
        size = self.int16()
        text = self._data[self._offset : self._offset + size].decode()
        self._offset += size
        return text


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


class KafkaWire:
    """One connection speaking Kafka's request/response framing (requests at version 0)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._correlation = 0

    async def request(self, api_key: int, body: bytes = b"") -> _Fields:
        """Send one version-0 request; its response, positioned after the correlation id."""
        self._correlation += 1
        header = struct.pack(">hhi", api_key, 0, self._correlation) + _string(KAFKA_CLIENT_ID)
        message = header + body
        self._writer.write(struct.pack(">i", len(message)) + message)
        await self._writer.drain()
        (size,) = struct.unpack(">i", await self._reader.readexactly(4))
        response = _Fields(await self._reader.readexactly(size))
        if (correlation := response.int32()) != self._correlation:
            raise WireError(f"Kafka response for request {correlation}, expected {self._correlation}")
        return response

    async def api_versions(self) -> dict[int, tuple[int, int]]:
        """The API keys the broker offers, each with its (min, max) version."""
        response = await self.request(KAFKA_API_VERSIONS)
        if error := response.int16():
            raise WireError(f"Kafka ApiVersions error code {error}")
        entries = [(response.int16(), response.int16(), response.int16()) for _ in range(response.int32())]
        return {key: (low, high) for key, low, high in entries}

    async def metadata(self) -> KafkaMetadata:
        """``Metadata`` for all topics: the advertised brokers, and each topic's partition count."""
        response = await self.request(KAFKA_METADATA, struct.pack(">i", 0))
        brokers = [
            KafkaBroker(response.int32(), response.string(), response.int32())
            for _ in range(response.int32())
        ]
        topics = {}
        for _ in range(response.int32()):
            response.skip(">h")  # the topic's error code
            name, partitions = response.string(), response.int32()
            for _ in range(partitions):
                response.skip(">hii")  # error code, partition, leader
                for _ in range(2):  # replicas, then in-sync replicas
                    response.skip(f">{response.int32()}i")
            topics[name] = partitions
        return KafkaMetadata(brokers, topics)

    async def create_topic(self, name: str, partitions: int = 1) -> None:
        """``CreateTopics`` for one topic (replication factor 1); raises on a non-zero error code."""
        topic = _string(name) + struct.pack(">ihii", partitions, 1, 0, 0)
        response = await self.request(
            KAFKA_CREATE_TOPICS, struct.pack(">i", 1) + topic + struct.pack(">i", 5000)
        )
        for _ in range(response.int32()):
            answered, error = response.string(), response.int16()
            if error:
                raise WireError(f"Kafka CreateTopics {answered!r}: error code {error}")


@contextlib.asynccontextmanager
async def kafka_wire(port: int) -> AsyncIterator[KafkaWire]:
    """A Kafka connection to ``127.0.0.1:port`` that has checked the broker answers ``ApiVersions``."""
    async with tcp(port) as (reader, writer):
        wire = KafkaWire(reader, writer)
        if KAFKA_METADATA not in await wire.api_versions():
            raise WireError("Kafka broker offers no Metadata API")
        yield wire


async def kafka_ready(port: int) -> None:
    """Require ``ApiVersions`` and a ``Metadata`` answer that advertises this very port."""
    async with kafka_wire(port) as wire:
        advertised = (await wire.metadata()).brokers
        if not any(b.port == port for b in advertised):
            raise WireError(f"Kafka broker on port {port} advertises {advertised}")
