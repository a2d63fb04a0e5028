"""The MQTT benches' publisher: MQTT 5 PUBLISH packets, QoS 1, written on bare asyncio streams.

paho's publisher spends about 300 us of Python a message (its ``Properties`` alone a third of it), so
filling a session of 20,000 would take longer than the round it feeds; this one writes the packets
itself. Each message is QoS 1, MQTT 5 content type ``application/json``, with two user properties:
``x-seq`` (its number from 0; the sinks check the order) and ``x-sent-at`` (``time.time()`` when it
was written; the sinks' latency stamp). At most ``INFLIGHT`` await their PUBACK; ``publish`` returns
once the broker has PUBACKed every one (each with reason code 0: accepted).

``python -m bench.mqtt_publish PORT TOPIC COUNT [RATE]`` runs it as a process of its own (so that a
paced publisher does not share the event loop of a consumer it feeds).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

SEQ, SENT_AT = "x-seq", "x-sent-at"
BODY = b'{"order": "' + b"x" * 200 + b'"}'
CONTENT_TYPE = "application/json"
INFLIGHT = 1000
"""Messages awaiting their PUBACK at a time (the broker's Receive Maximum is mosquitto's 65,535)."""
CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _varint(size: int) -> bytes:
    out = bytearray()
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, n: int, sent_at: float) -> bytes:
    """Message ``n``'s PUBLISH (QoS 1, packet id ``packet_id``), stamped ``sent_at``."""
    properties = b"\x03" + _string(CONTENT_TYPE)
    properties += b"\x26" + _string(SEQ) + _string(str(n))
    properties += b"\x26" + _string(SENT_AT) + _string(repr(sent_at))
    head = _string(topic) + struct.pack(">H", packet_id) + _varint(len(properties)) + properties
    return _packet(PUBLISH_QOS1, head + BODY)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    size, shift = 0, 0
    while True:
        digit = (await reader.readexactly(1))[0]
        size |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    return first, await reader.readexactly(size)


async def publish(port: int, topic: str, count: int, rate: float = 0.0) -> None:
    """``count`` messages on ``topic`` (at ``rate`` a second when given; else as fast as the window
    lets), each PUBACKed by the broker on ``127.0.0.1:port`` before this returns."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # CONNECT: MQTT 5, clean start, keep-alive 60 s, no properties, an id the broker assigns.
        connect = _string("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 60) + b"\0" + _string("")
        writer.write(_packet(CONNECT, connect))
        first, body = await _read_packet(reader)
        assert first == CONNACK and body[1] == 0, f"CONNACK {first:#x} {body!r}"
        window = asyncio.Semaphore(INFLIGHT)
        unacked: set[int] = set()

        async def acks() -> None:
            acked = 0
            while acked < count:
                kind, body = await _read_packet(reader)
                if kind != PUBACK:
                    continue
                packet_id = struct.unpack(">H", body[:2])[0]
                assert len(body) < 3 or body[2] == 0, f"PUBACK {packet_id}: reason {body[2]:#x}"
                unacked.remove(packet_id)
                acked += 1
                window.release()

        acker = asyncio.ensure_future(acks())
        started = time.perf_counter()
        for n in range(count):
            if rate:
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            await window.acquire()
            packet_id = n % 65535 + 1
            unacked.add(packet_id)
            writer.write(publish_packet(topic, packet_id, n, time.time()))
            if rate or n % 64 == 63:
                await writer.drain()
        await writer.drain()
        await asyncio.wait_for(acker, 60)
        writer.write(_packet(DISCONNECT, b""))
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: python -m bench.mqtt_publish PORT TOPIC COUNT [RATE]")
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(publish(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), rate))
