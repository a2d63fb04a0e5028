"""Pieces of the outside checks of the Kafka gateway: a producer speaking the Kafka wire itself (no
client library), an HTTP subscriber that parses what it receives itself, a ledger judge."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.brokers import Tansu
from tests.harness.brokers_wire import kafka_wire
from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.kafka import FAST_RETRY, first_arrivals
from tests.harness.raw_sink import RawSink

Header = tuple[bytes, bytes | None]
Record = tuple[bytes | None, bytes | None, Sequence[Header]]
"""key, value, headers, as raw bytes: None is Kafka's null (a null key, a tombstone, a null header)."""


# --- a Kafka producer on the bare wire ------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    """Kafka's zig-zag varint."""
    zigzag = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        low, zigzag = zigzag & 0x7F, zigzag >> 7
        if not zigzag:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _varbytes(data: bytes | None) -> bytes:
    return varint(-1) if data is None else varint(len(data)) + data


def record_batch(records: Sequence[Record]) -> bytes:
    """A ``RecordBatch`` (magic 2) of ``records``, offsets 0.., all stamped now."""
    now = int(time.time() * 1000)
    body = b""
    for delta, (key, value, headers) in enumerate(records):
        one = b"\x00" + varint(0) + varint(delta) + _varbytes(key) + _varbytes(value) + varint(len(headers))
        for name, header_value in headers:
            one += varint(len(name)) + name + _varbytes(header_value)
        body += varint(len(one)) + one
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, now, now, -1, -1, -1, len(records)) + body
    rest = struct.pack(">ib", 0, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(rest)) + rest


class WireProducer:
    """One connection sending ``Produce`` v3 (acks all) and reading each answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer, self._correlation = reader, writer, 0

    async def produce(self, topic: str, partition: int, records: Sequence[Record]) -> int:
        """The base offset the broker stored ``records`` at; raises on an error code."""
        self._correlation += 1
        name, batch = topic.encode(), record_batch(records)
        body = struct.pack(">hhi", -1, -1, 10_000) + struct.pack(">ih", 1, len(name)) + name
        body += struct.pack(">iii", 1, partition, len(batch)) + batch
        message = struct.pack(">hhih", 0, 3, self._correlation, 4) + b"wire" + body
        self._writer.write(struct.pack(">i", len(message)) + message)
        await self._writer.drain()
        (size,) = struct.unpack(">i", await self._reader.readexactly(4))
        answer = await self._reader.readexactly(size)
        (correlation,) = struct.unpack_from(">i", answer, 0)
        assert correlation == self._correlation
        (name_size,) = struct.unpack_from(">h", answer, 8)
        _, error, base = struct.unpack_from(">ihq", answer, 10 + name_size + 4)
        assert error == 0, f"Produce to {topic}/{partition}: error code {error}"
        return int(base)


@contextlib.asynccontextmanager
async def wire_producer(port: int) -> AsyncIterator[WireProducer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield WireProducer(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def create_topic(broker: Tansu, topic: str, partitions: int = 1) -> None:
    async with kafka_wire(broker.port) as wire:
        await wire.create_topic(topic, partitions)


@dataclass
class Loading:
    """One record every few milliseconds over ``partitions``, through the bare wire; ``stored`` holds the
    event id of each the broker acknowledged."""

    port: int
    topic: str
    partitions: int
    stored: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Loading:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task

    async def _run(self) -> None:
        async with wire_producer(self.port) as wire:
            n = 0
            while not self._stop.is_set():
                partition = n % self.partitions
                offset = await wire.produce(self.topic, partition, [(None, f"record {n}".encode(), [])])
                self.stored.append(f"{self.topic}/{partition}/{offset}")
                n += 1
                await asyncio.sleep(0.004)  # the producer's pace, not a wait for readiness


# --- a subscriber that parses HTTP by hand -----------------------------------------------------------


# --- helpers ----------------------------------------------------------------------------------------


def pod(
    tmp: Path, sink: RawSink, *, standalone: bool = False, client_args: Sequence[str] = (), **sources: str
) -> Gateway:
    config = tmp / "cm.yaml"
    config.write_text(configmap(**sources))
    return Gateway(tmp, config, [sink.url], pod=not standalone, kind="kafka", client_args=client_args)


def partition_source(url: str, topic: str, partition: int = 0) -> str:
    return f'url: {url}\ntopic: {topic}\n{FAST_RETRY}\npartition: "{partition}"'


def judge_ledger(stored: Sequence[str], received: Sequence[str], allowed_repeats: int) -> str:
    """Every stored id arrived, nothing else did, first arrivals in offset order per partition, and at
    most ``allowed_repeats`` arrivals of an id seen before; a summary line."""
    counts = Counter(received)
    repeats = sum(n - 1 for n in counts.values())
    missing = sorted(set(stored) - set(counts))
    assert not missing, f"{len(missing)} stored records never arrived, e.g. {missing[:5]}"
    assert set(counts) <= set(stored), "nothing arrives that the broker did not store"
    for partition, offsets in first_arrivals(received).items():
        assert offsets == list(range(len(offsets))), f"partition {partition}: first arrivals out of order"
    assert repeats <= allowed_repeats, f"{repeats} repeats, more than {allowed_repeats}"
    return f"{len(stored)} stored, {len(counts)} delivered, {repeats} repeats"


# --- the tests --------------------------------------------------------------------------------------
