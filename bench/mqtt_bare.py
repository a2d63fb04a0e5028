"""The broker, the sessions and the bare paho-mqtt consumers ``bench.mqtt_e2e`` measures the gateway
against: an MQTT 5 client resuming a persistent session (clean start off), QoS 1, acknowledging by
hand (``manual_ack``) with the gateway's guarantee: a message's PUBACK goes only once the subscriber
has it and every message before it, and the PUBACKs go in the order the messages came (MQTT's rule).

The broker: Debian's mosquitto 2.0, one listener on ``127.0.0.1:<port>``, anonymous, persistence on
(as the test harness's ``tests.harness.brokers_mosquitto`` runs it; ``user root`` when root), and
``max_inflight_messages 0`` (no cap of its own on QoS 1 messages out to a client: an MQTT 5
client's Receive Maximum is the cap, though 2.0.11 overshoots it once PUBACKs come back: see
``bench.mqtt_audit``) and ``max_queued_messages 100000`` (the default, 1,000, would drop most of a
session filled beforehand; mosquitto still PUBACKs what it drops).

A session (``session``) is made by connecting its client id with clean start off and a session
expiry, subscribing to its topic at QoS 1 and disconnecting; whatever is then published on the topic
is queued for it (by ``bench.mqtt_publish``: QoS 1, MQTT 5, user properties ``x-seq`` and
``x-sent-at``; ``publish`` in this process, ``paced`` from a process of its own). Once a consumer is
gone, ``left`` connects its client id again: the broker must still have the session, and send
nothing (a message left unacknowledged would be sent again at once); that connection's session
expiry, 0, deletes the session.

Forwarding, the same as the gateway client's (and as ``bench.amqp_bare``'s):

* HTTP: one POST per message (binary mode, ``ce-*`` headers, the user properties as the gateway
  gives them, in ``ce-userproperties``: JSON, name -> list of values), delivered once the 200 is in;
* NATS (core): publish, then ``flush``, whose PONG says the server has everything published before
  it; delivered after that PONG.

How many at a time, each connection's Receive Maximum the gateway's (``RECEIVE_MAXIMUM``):

* sequential: one message at a time, in order: forwarded, then its PUBACK;
* pipelined: 16 forwarded at a time (over HTTP order is given up); each delivered message settles its
  place, and the PUBACKs of the **contiguous delivered prefix** go, in order, whenever it moved;
* batched (NATS only): what has arrived, up to 64, published together, one flush, their PUBACKs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import nats
import paho.mqtt.client as mqtt
from nats.aio.client import Client as Nats
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.mqtt_publish import publish
from bench.procs import ROOT, process

__all__ = ["publish"]

SOURCE = "orders"
"""The gateway's event source (the sinks' ``ce-subject``); the bare consumers name their events the same."""
RECEIVE_MAXIMUM = 1000
"""The gateway's Receive Maximum: the client's window (``UnackedBound.events``, its default)."""
SESSION_EXPIRY = 3600
"""Seconds, the gateway's default (``sessionExpiry: 1h``)."""
BATCH = 64
"""Messages published together by the batched consumer, as the other benches' do."""
BROKER_LIMITS = ("max_inflight_messages 0", "max_queued_messages 100000")
MISSING = "no mosquitto binary: install Debian's mosquitto (`make brokers` does, as root)"

Message = mqtt.MQTTMessage
Deliver = Callable[[Sequence[Message]], Awaitable[None]]
"""Forward these messages to the subscriber; return once it has them (as promised for the transport)."""


@contextlib.contextmanager
def mosquitto(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """mosquitto on ``127.0.0.1:port`` (the module's config) until the block ends; SIGTERM, then wait."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else ""
    )
    if not binary:
        raise FileNotFoundError(MISSING)
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["per_listener_settings false", f"listener {port} 127.0.0.1", "allow_anonymous true"]
    lines += ["persistence true", f"persistence_location {workdir}/", "persistence_file mosquitto.db"]
    lines += [*BROKER_LIMITS, "log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
    if os.geteuid() == 0:
        lines.append("user root")
    config = workdir / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    with process([binary, "-c", str(config)], port, workdir / "mosquitto.log") as proc:
        yield proc


class Client:
    """A paho client (MQTT 5, acknowledgements by hand) driven by the running loop, as paho's asyncio
    example does it: the loop watches the socket and calls ``loop_read``/``loop_write``, a task
    ``loop_misc`` every second."""

    def __init__(self, client_id: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        self._connack: asyncio.Future[bool] = self.loop.create_future()
        self._suback: asyncio.Future[list[Any]] = self.loop.create_future()
        self._gone: asyncio.Future[None] = self.loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        paho = self.paho
        paho.on_socket_open = lambda c, u, sock: self.loop.add_reader(sock, c.loop_read)
        paho.on_socket_close = self._closed
        paho.on_socket_register_write = lambda c, u, sock: self.loop.add_writer(sock, c.loop_write)
        paho.on_socket_unregister_write = self._written
        paho.on_connect = self._on_connect
        paho.on_subscribe = lambda c, u, mid, codes, props: self._suback.set_result(list(codes))
        paho.on_disconnect = lambda c, u, flags, code, props: _resolve(self._gone)
        paho.on_message = lambda c, u, msg: self.inbox.put_nowait(msg)

    def _closed(self, c: mqtt.Client, u: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)

    def _written(self, c: mqtt.Client, u: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, code: Any, props: Any) -> None:
        if code.is_failure:
            self._connack.set_exception(ConnectionError(f"the broker refused the connection: {code}"))
        else:
            self._connack.set_result(bool(flags.session_present))

    async def connect(self, port: int, *, expiry: int = SESSION_EXPIRY) -> bool:
        """Connect with clean start off (the session kept for ``expiry`` s after the disconnect):
        whether the broker had the session."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        properties.SessionExpiryInterval = expiry
        self.paho.connect("127.0.0.1", port, keepalive=60, clean_start=False, properties=properties)
        self._misc = asyncio.ensure_future(self._tick())
        return await asyncio.wait_for(self._connack, 10)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.paho.loop_misc()

    async def subscribe(self, topic: str) -> None:
        self.paho.subscribe(topic, qos=1)
        (granted,) = await asyncio.wait_for(self._suback, 10)
        assert granted.value == 1, f"QoS {granted} granted on {topic}, not 1"

    def ack(self, msg: Message) -> None:
        self.paho.ack(msg.mid, msg.qos)

    async def disconnect(self) -> None:
        """DISCONNECT (written after every PUBACK before it), then until the socket is closed."""
        try:
            self.paho.disconnect()
            await asyncio.wait_for(self._gone, 10)
        finally:
            if self._misc is not None:
                self._misc.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def session(port: int, client_id: str, topic: str) -> None:
    """A fresh persistent session for ``client_id``, subscribed to ``topic`` at QoS 1, disconnected."""
    client = Client(client_id)
    assert not await client.connect(port), f"{client_id} had a session already"
    await client.subscribe(topic)
    await client.disconnect()


def _broker_connections(port: int) -> int:
    """The broker's TCP connections on ``port`` it has not closed yet: established, or closed by the
    client and not yet by the broker (``CLOSE_WAIT``: the broker has not read all of it)."""
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with contextlib.suppress(FileNotFoundError):
            for row in table.read_text().splitlines()[1:]:
                fields = row.split()
                if int(fields[1].rpartition(":")[2], 16) == port and fields[3] in ("01", "08"):
                    count += 1
    return count


async def left(port: int, client_id: str, wait: float) -> int:
    """Messages the broker sends ``client_id``'s session within ``wait`` s of resuming it (it sends
    unacknowledged and queued ones at once); the session is deleted after (expiry 0). First, until
    the broker has closed every connection: else it could take the session over from the last
    consumer's connection with PUBACKs of it still unread (and then send those messages again)."""
    for _ in range(500):
        if not _broker_connections(port):
            break
        await asyncio.sleep(0.02)
    else:
        raise TimeoutError(f"the broker on {port} kept {_broker_connections(port)} connection(s) open")
    client = Client(client_id)
    present = await client.connect(port, expiry=0)
    await asyncio.sleep(wait)
    await client.disconnect()
    assert present, f"the broker lost the session of {client_id}"
    return client.inbox.qsize()


def publisher(port: int, topic: str, count: int, rate: float) -> subprocess.Popen[bytes]:
    """``python -m bench.mqtt_publish``: ``count`` messages on ``topic`` at ``rate`` a second, from a
    process of its own; it exits once the broker PUBACKed every one."""
    cmd = [sys.executable, "-m", "bench.mqtt_publish", str(port), topic, str(count), str(rate)]
    return subprocess.Popen(cmd, cwd=ROOT)


async def paced(port: int, topic: str, count: int, rate: float) -> None:
    """Run ``publisher`` and wait for it."""
    proc = publisher(port, topic, count, rate)
    code = await asyncio.get_running_loop().run_in_executor(None, proc.wait)
    assert code == 0, f"the publisher of {count} on {topic} exited with {code}"


def ce_headers(msg: Message) -> dict[str, str]:
    """The CloudEvent attributes of ``msg`` as ``ce-*`` headers (binary mode), as the gateway gives
    them: a fresh id (MQTT has none), the topic in ``eventsubject``, the user properties grouped by
    name in ``userproperties`` (JSON, percent-encoded), where the sinks find the stamp and number."""
    grouped: dict[str, list[str]] = {}
    for name, value in getattr(msg.properties, "UserProperty", None) or ():
        grouped.setdefault(name, []).append(value)
    return {
        "ce-specversion": "1.0",
        "ce-id": f"{SOURCE}:{uuid.uuid4()}",
        "ce-source": "bench-gateway",
        "ce-type": "mqtt",
        "ce-subject": SOURCE,
        "ce-eventsubject": msg.topic,
        "ce-userproperties": quote(json.dumps(grouped, separators=(",", ":")), safe=""),
    }


def http_delivery(http: aiohttp.ClientSession, sink: int) -> Deliver:
    """POST each message to the HTTP sink on port ``sink``, one after the other; each answered 200."""

    async def deliver(msgs: Sequence[Message]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{sink}/", data=bytes(msg.payload), headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    return deliver


def nats_delivery(nc: Nats, subject: str) -> Deliver:
    """Publish each message on ``subject`` (core NATS), then flush once: the server has them all."""

    async def deliver(msgs: Sequence[Message]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "ce-datacontenttype": "application/json"}
            await nc.publish(subject, bytes(msg.payload), headers=headers)
        await nc.flush()

    return deliver


class Acks:
    """PUBACKs in arrival order, each once it and every message before it are delivered."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.handed: deque[Message] = deque()
        self.delivered: set[int] = set()
        """``id()`` of delivered messages the prefix has not reached yet."""

    def hand(self, msg: Message) -> None:
        self.handed.append(msg)

    def settle(self, msg: Message) -> None:
        self.delivered.add(id(msg))
        while self.handed and id(self.handed[0]) in self.delivered:
            first = self.handed.popleft()
            self.delivered.discard(id(first))
            self.client.ack(first)


async def consume(
    port: int,
    client_id: str,
    topic: str,
    count: int,
    deliver: Deliver,
    *,
    inflight: int = 1,
    batched: bool = False,
) -> None:
    """Resume ``client_id``'s session (subscribing to ``topic`` again, as the gateway does), take
    ``count`` messages and hand each to ``deliver``, acknowledging as the module says; then disconnect."""
    client = Client(client_id)
    assert await client.connect(port), f"the broker had no session for {client_id}"
    await client.subscribe(topic)
    try:
        await _forward_all(client, count, deliver, inflight, batched)
    finally:
        await client.disconnect()


async def _take(client: Client) -> Message:
    msg = await client.inbox.get()
    assert msg.qos == 1 and not msg.dup, f"message {msg.mid}: QoS {msg.qos}, dup {msg.dup}"
    return msg


async def _forward_all(client: Client, count: int, deliver: Deliver, inflight: int, batched: bool) -> None:
    if inflight == 1 and not batched:  # sequential: forwarded, then its PUBACK, one at a time
        for _ in range(count):
            msg = await _take(client)
            await deliver([msg])
            client.ack(msg)
        return
    acks = Acks(client)
    gate = asyncio.Semaphore(inflight)

    async def forward(msgs: Sequence[Message]) -> None:
        try:
            await deliver(msgs)
            for msg in msgs:
                acks.settle(msg)
        finally:
            gate.release()

    pending: set[asyncio.Task[None]] = set()
    taken = 0
    while taken < count:
        msgs = [await _take(client)]
        while batched and len(msgs) < min(BATCH, count - taken) and not client.inbox.empty():
            msgs.append(await _take(client))
        taken += len(msgs)
        for msg in msgs:
            acks.hand(msg)
        await gate.acquire()
        if inflight == 1:
            await forward(msgs)
            continue
        task = asyncio.ensure_future(forward(msgs))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    assert not acks.handed, f"{len(acks.handed)} messages never acknowledged"


async def bare_http(port: int, client_id: str, topic: str, sink: int, count: int, inflight: int) -> None:
    """The bare consumer of ``client_id``'s session forwarding to the HTTP sink on port ``sink``,
    ``inflight`` POSTs at a time."""
    async with aiohttp.ClientSession() as http:
        await consume(port, client_id, topic, count, http_delivery(http, sink), inflight=inflight)


async def bare_nats(
    port: int, client_id: str, topic: str, nats_url: str, to: str, count: int, inflight: int, batched: bool
) -> None:
    """The bare consumer of ``client_id``'s session publishing to ``to`` on the NATS server
    ``nats_url`` (one nats-py client), flushed before the messages count as delivered."""
    nc = await nats.connect(nats_url)
    try:
        deliver = nats_delivery(nc, to)
        await consume(port, client_id, topic, count, deliver, inflight=inflight, batched=batched)
    finally:
        await nc.close()
