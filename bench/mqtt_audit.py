"""A TCP relay between the MQTT gateway and mosquitto that reads the packets going by: when each
PUBLISH (broker to gateway) and each PUBACK (gateway to broker) passed, with its packet id, so that
``bench.mqtt_e2e`` can check the gateway's acknowledgements against its sink.

What ``Audit.check`` asks of one run of ``count`` messages (a fresh session, filled beforehand, each
delivered once and in order at the sink): every PUBLISH QoS 1 and not ``dup``; ``count`` PUBACKs,
the k-th for the k-th PUBLISH's packet id (MQTT's order: the PUBACKs in the order the messages came);
the k-th PUBACK seen here after the sink had message k (the sink stamps a POST as it reads it, before
its 200; the gateway acknowledges after the 200); and the Receive Maximum in the gateway's CONNECT
the one expected (its window). The most PUBLISHes unacknowledged at once is reported, not checked:
it is the broker's to keep within the Receive Maximum, and Debian's mosquitto 2.0.11 does not once
PUBACKs come back (its quota accounting, eclipse-mosquitto/mosquitto#2301, fixed in 2.0.13; a client
that never acknowledges does get exactly its Receive Maximum). The relay forwards each chunk as it
reads it (it adds a hop and its own CPU: the audited run is not one of the timed ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

CONNECT, PUBLISH, PUBACK = 1, 3, 4
RECEIVE_MAXIMUM = 0x21
PROPERTY_SIZES = {0x11: 4, 0x21: 2, 0x27: 4, 0x22: 2, 0x19: 1, 0x17: 1}
"""Bytes of each fixed-size property a CONNECT may hold (the others are strings or binary data)."""
CLOSE_TIMEOUT = 5.0
"""Seconds the relay's connections get to finish once the block ends (the gateway has gone)."""


@dataclass
class Audit:
    publishes: list[tuple[float, int]] = field(default_factory=list)
    """(when it passed, packet id) of each PUBLISH to the gateway."""
    pubacks: list[tuple[float, int]] = field(default_factory=list)
    """(when it passed, packet id) of each PUBACK from the gateway."""
    bad_publishes: list[str] = field(default_factory=list)
    """PUBLISHes that were not QoS 1 or were ``dup``."""
    connections: int = 0
    receive_maximums: list[int | None] = field(default_factory=list)
    """The Receive Maximum of each CONNECT from the gateway (None: none given, 65,535)."""

    def check(self, arrivals: list[float], count: int, receive_maximum: int) -> dict[str, Any]:
        """The run's figures, once every check passed (else AssertionError naming the first miss)."""
        assert not self.bad_publishes, self.bad_publishes[:5]
        assert len(self.publishes) == count, f"{len(self.publishes)} PUBLISHes, {count} published"
        assert len(self.pubacks) == count, f"{len(self.pubacks)} PUBACKs for {count} PUBLISHes"
        assert len(arrivals) == count, (len(arrivals), count)
        order = [
            k
            for k, (sent, acked) in enumerate(zip(self.publishes, self.pubacks, strict=True))
            if sent[1] != acked[1]
        ]
        assert not order, (
            f"PUBACK {order[0]} is for packet {self.pubacks[order[0]][1]}, not {self.publishes[order[0]][1]}"
        )
        leads = [acked[0] - arrival for acked, arrival in zip(self.pubacks, arrivals, strict=True)]
        early = [k for k, lead in enumerate(leads) if lead < 0]
        assert not early, (
            f"message {early[0]} PUBACKed {-leads[early[0]] * 1000:.3f} ms before the sink had it"
        )
        asked = self.receive_maximums
        assert asked == [receive_maximum], f"Receive Maximum of each CONNECT {asked}, not {receive_maximum}"
        events = sorted([(t, 1) for t, _ in self.publishes] + [(t, -1) for t, _ in self.pubacks])
        out, most = 0, 0
        for _, step in events:
            out += step
            most = max(most, out)
        return {
            "publishes": len(self.publishes),
            "pubacks": len(self.pubacks),
            "pubacks_in_arrival_order": True,
            "pubacks_after_sink": True,
            "min_sink_to_puback_ms": round(min(leads) * 1000, 3),
            "connect_receive_maximum": asked[0],
            "broker_max_unacked_publishes": most,
            "connections": self.connections,
        }


class _Packets:
    """MQTT packets out of a byte stream, as it comes: (type, flags, body)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buffer += data
        found: list[tuple[int, int, bytes]] = []
        while True:
            size, shift, at = 0, 0, 1
            while True:
                if at >= len(self.buffer):
                    return found
                digit = self.buffer[at]
                size |= (digit & 0x7F) << shift
                shift, at = shift + 7, at + 1
                if not digit & 0x80:
                    break
            if len(self.buffer) < at + size:
                return found
            first = self.buffer[0]
            found.append((first >> 4, first & 0x0F, bytes(self.buffer[at : at + size])))
            del self.buffer[: at + size]


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The variable byte integer at ``at``, and where it ends."""
    value, shift = 0, 0
    while True:
        digit = data[at]
        value, shift, at = value | (digit & 0x7F) << shift, shift + 7, at + 1
        if not digit & 0x80:
            return value, at


def _receive_maximum(connect: bytes) -> int | None:
    """The Receive Maximum property of an MQTT 5 CONNECT's body, None without one (or not MQTT 5)."""
    (name_length,) = struct.unpack_from(">H", connect)
    at = 2 + name_length
    if connect[at] != 5:
        return None
    size, at = _varint(connect, at + 4)  # after the level, the flags and the keep-alive
    end = at + size
    while at < end:
        identifier, at = _varint(connect, at)
        if identifier == RECEIVE_MAXIMUM:
            return int(struct.unpack_from(">H", connect, at)[0])
        if identifier in PROPERTY_SIZES:
            at += PROPERTY_SIZES[identifier]
        else:  # a string or binary data (a user property: two strings)
            for _ in range(2 if identifier == 0x26 else 1):
                at += 2 + struct.unpack_from(">H", connect, at)[0]
    return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Any) -> None:
    packets = _Packets()
    try:
        while data := await reader.read(65536):
            now = time.time()
            writer.write(data)
            for kind, flags, body in packets.feed(data):
                seen(now, kind, flags, body)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def relay(broker_port: int, audit: Audit) -> AsyncIterator[int]:
    """A relay to ``127.0.0.1:broker_port`` on a free port (yielded) until the block ends."""

    def down(now: float, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            qos, dup = (flags >> 1) & 0x03, bool(flags & 0x08)
            (topic_length,) = struct.unpack_from(">H", body)
            (packet_id,) = struct.unpack_from(">H", body, 2 + topic_length)
            audit.publishes.append((now, packet_id))
            if qos != 1 or dup:
                audit.bad_publishes.append(f"packet {packet_id}: QoS {qos}, dup {dup}")

    def up(now: float, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBACK:
            audit.pubacks.append((now, struct.unpack_from(">H", body)[0]))
        elif kind == CONNECT:
            audit.receive_maximums.append(_receive_maximum(body))

    tasks: set[asyncio.Task[None]] = set()

    async def accepted(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        audit.connections += 1
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", broker_port)
        pipes = (_pipe(client_reader, broker_writer, up), _pipe(broker_reader, client_writer, down))
        for pipe in pipes:
            task = asyncio.ensure_future(pipe)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        if tasks:  # what the gateway wrote before it closed its connection passes on first
            await asyncio.wait(set(tasks), timeout=CLOSE_TIMEOUT)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
