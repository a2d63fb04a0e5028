"""The broker and the bare aio-pika consumers ``bench.amqp_e2e`` measures the gateway against: a
consumer of a durable named queue that forwards each message to the subscriber and acks it with the
gateway's guarantee (a message is acked only once the subscriber has it, and every message before it).

The broker: one RabbitMQ node started as the test harness starts it
(``tests.harness.brokers_rabbitmq.RabbitMQ``: Debian's ``/usr/lib/rabbitmq/bin/rabbitmq-server`` with an
epmd, an environment and a work dir of its own; about 9 s to boot). Every queue is durable, bound to
the durable direct exchange ``EXCHANGE`` with its own name as the routing key, and filled beforehand
with persistent messages, each confirmed by the broker (publisher confirms); each message's
``message_id`` is its number from 0 (the gateway's event id is then ``orders:N``, which the sink checks
for order, and the bare consumers give the same).

Forwarding, the same as the gateway client's (and as ``bench.nats_bare``'s):

* HTTP: one POST per message (binary mode, the ``ce-*`` headers), delivered once the 200 is in;
* NATS (core): publish, then ``flush``, whose PONG says the server has everything published before
  it; delivered after that PONG (the promise of the client's ``nats://`` delivery).

How many at a time, with the gateway's prefetch (``PREFETCH``, the client's default window):

* sequential: one message at a time, in order: forwarded, then acked on its own (``basic.ack``);
* pipelined: 16 forwarded at a time (over HTTP order is given up), acked by an acker task of its own,
  coalesced: one ``basic.ack`` with ``multiple`` for the end of the **contiguous delivered prefix**
  whenever it moved, never past a message not yet delivered (what the gateway does);
* batched (NATS only): what has arrived, up to 64, published together, one flush, one ack (multiple).

Before a consumer leaves, it closes its connection (the broker would requeue whatever was not acked),
then the queue is read back: it must be empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import aio_pika
import aio_pika.abc
import aiohttp
import nats
from nats.aio.client import Client

from tests.harness.brokers_rabbitmq import MISSING, RabbitMQ, rabbitmq_binary

EXCHANGE = "orders"
"""The durable direct exchange every queue is bound to (by its own name)."""
SOURCE = "orders"
"""The gateway's event source (ids ``orders:N``); the bare consumers name their events the same."""
SENT_AT = "x-sent-at"
"""The publisher's send time (``time.time()``, as text), a message header the sink reads (through the
gateway's ``headers`` extension, or as an HTTP or NATS header from the bare consumers)."""
BODY = b'{"order": "' + b"x" * 200 + b'"}'
PREFETCH = 1000
"""The gateway's prefetch: the client's window (``UnackedBound.events``, its default)."""
BATCH = 64
"""Messages published together by the batched consumer, as the Kafka and NATS benches' do."""
CONFIRM_WINDOW = 500
"""Messages published (and awaited for their confirms) at a time when filling a queue."""

Message = aio_pika.abc.AbstractIncomingMessage
Deliver = Callable[[Sequence[Message]], Awaitable[None]]
"""Forward these messages to the subscriber; return once it has them (as promised for the transport)."""


@contextlib.contextmanager
def rabbitmq(workdir: Path) -> Iterator[RabbitMQ]:
    """A RabbitMQ node (the harness's) in ``workdir`` until the block ends, then stopped with its epmd."""
    binary = rabbitmq_binary()
    if binary is None:
        raise FileNotFoundError(MISSING)
    workdir.mkdir(parents=True, exist_ok=True)
    node = RabbitMQ(binary, workdir)
    try:
        asyncio.run(node.start())
        yield node
    finally:
        node.close_now()


def message(n: int, *, stamped: bool = False) -> aio_pika.Message:
    """Message ``n``: persistent, JSON, ``message_id`` ``n``, stamped ``x-sent-at`` now if asked."""
    headers: dict[str, aio_pika.abc.FieldValue] = {SENT_AT: repr(time.time())} if stamped else {}
    return aio_pika.Message(
        BODY,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(n),
        headers=headers,
    )


class Admin:
    """A connection of the bench's own: declares, fills, reads back and deletes queues."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self.connection = connection
        self.channel: aio_pika.abc.AbstractChannel | None = None

    @classmethod
    async def open(cls, url: str) -> Admin:
        admin = cls(await aio_pika.connect(url))
        admin.channel = await admin.connection.channel(publisher_confirms=True)
        return admin

    async def close(self) -> None:
        await self.connection.close()

    async def declare(self, queue: str) -> aio_pika.abc.AbstractExchange:
        """The exchange and the durable ``queue`` bound to it, as the gateway declares them."""
        assert self.channel is not None
        exchange = await self.channel.declare_exchange(EXCHANGE, "direct", durable=True)
        declared = await self.channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, queue)
        return exchange

    async def fill(self, queue: str, count: int) -> None:
        """A fresh ``queue`` holding ``count`` persistent messages, each confirmed by the broker."""
        exchange = await self.declare(queue)
        for start in range(0, count, CONFIRM_WINDOW):
            sent = range(start, min(count, start + CONFIRM_WINDOW))
            await asyncio.gather(*(exchange.publish(message(n), routing_key=queue) for n in sent))
        assert await self.state(queue) == (count, 0), (queue, await self.state(queue), count)

    async def paced(self, queue: str, count: int, rate: float) -> None:
        """``count`` messages to ``queue`` at ``rate`` a second, each stamped as it is sent; every
        confirm is awaited before returning (not before the next is sent)."""
        assert self.channel is not None
        exchange = await self.channel.get_exchange(EXCHANGE)
        confirms: list[asyncio.Future[object]] = []
        started = time.perf_counter()
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            sent = exchange.publish(message(n, stamped=True), routing_key=queue)
            confirms.append(asyncio.ensure_future(sent))
        await asyncio.gather(*confirms)

    async def state(self, queue: str) -> tuple[int, int]:
        """``queue``'s messages ready (neither delivered nor unacked) and its consumers."""
        assert self.channel is not None
        declared = await self.channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def until_consumed(self, queue: str, timeout: float = 60.0) -> None:
        """Until ``queue`` has a consumer (the gateway's source runs)."""
        deadline = time.monotonic() + timeout
        while (await self.state(queue))[1] < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no consumer on queue {queue} within {timeout}s")
            await asyncio.sleep(0.05)

    async def delete(self, queue: str) -> None:
        assert self.channel is not None
        await self.channel.queue_delete(queue)


class Acker:
    """The contiguous delivered prefix of one channel's messages, acked (``multiple``) by a task."""

    def __init__(self) -> None:
        self.handed: deque[int] = deque()
        """Delivery tags handed on and not yet passed by the prefix, in order."""
        self.delivered: set[int] = set()
        self.messages: dict[int, Message] = {}
        self.due: Message | None = None
        self.acks = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.ensure_future(self._run())

    def hand(self, msg: Message) -> None:
        tag = msg.delivery_tag or 0
        self.handed.append(tag)
        self.messages[tag] = msg

    def settle(self, msg: Message) -> None:
        """``msg`` is delivered: ack the prefix's end if it moved."""
        self.delivered.add(msg.delivery_tag or 0)
        last = None
        while self.handed and self.handed[0] in self.delivered:
            tag = self.handed.popleft()
            self.delivered.discard(tag)
            last = self.messages.pop(tag)
        if last is not None:
            self.due = last
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            due, self.due = self.due, None
            if due is not None:
                await due.ack(multiple=True)
                self.acks += 1
            if self._closing and self.due is None:
                return

    async def close(self) -> None:
        """Once what is due is acked, stop the task."""
        self._closing = True
        self._wake.set()
        await self._task


def ce_headers(msg: Message) -> dict[str, str]:
    """The CloudEvent attributes of ``msg`` as ``ce-*`` headers (binary mode), its send stamp kept;
    the id and subject are the gateway's (``orders:<message_id>``, the routing key)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"{SOURCE}:{msg.message_id}",
        "ce-source": "bench-gateway",
        "ce-type": "amqp",
        "ce-subject": msg.routing_key or "",
    }
    sent = (msg.headers or {}).get(SENT_AT)
    if sent is not None:
        headers[SENT_AT] = sent.decode() if isinstance(sent, bytes) else str(sent)
    return headers


def http_delivery(http: aiohttp.ClientSession, sink: int) -> Deliver:
    """POST each message to the HTTP sink on port ``sink``, one after the other; each answered 200."""

    async def deliver(msgs: Sequence[Message]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{sink}/", data=msg.body, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    return deliver


def nats_delivery(nc: Client, subject: str) -> Deliver:
    """Publish each message on ``subject`` (core NATS), then flush once: the server has them all."""

    async def deliver(msgs: Sequence[Message]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "ce-datacontenttype": "application/json"}
            await nc.publish(subject, msg.body, headers=headers)
        await nc.flush()

    return deliver


async def consume(
    url: str,
    queue: str,
    count: int,
    deliver: Deliver,
    *,
    inflight: int = 1,
    batched: bool = False,
) -> None:
    """Take ``count`` messages off the durable ``queue`` (prefetch ``PREFETCH``) and hand each to
    ``deliver``, acking after; the queue is read back empty after."""
    connection = await aio_pika.connect(url)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=PREFETCH)
        declared = await channel.declare_queue(queue, durable=True)

        async def arrived(msg: Message) -> None:
            inbox.put_nowait(msg)

        await declared.consume(arrived, no_ack=False)
        await _forward_all(inbox, count, deliver, inflight, batched)
    finally:
        await connection.close()
    admin = await Admin.open(url)
    try:
        left = await admin.state(queue)
    finally:
        await admin.close()
    assert left == (0, 0), f"queue {queue} holds {left[0]} messages after the bare consumer"


async def _forward_all(
    inbox: asyncio.Queue[Message], count: int, deliver: Deliver, inflight: int, batched: bool
) -> None:
    if inflight == 1 and not batched:  # sequential: forwarded, then acked, one at a time
        for _ in range(count):
            msg = await inbox.get()
            await deliver([msg])
            await msg.ack()
        return
    acker = Acker()
    gate = asyncio.Semaphore(inflight)

    async def forward(msgs: Sequence[Message]) -> None:
        try:
            await deliver(msgs)
            for msg in msgs:
                acker.settle(msg)
        finally:
            gate.release()

    pending: set[asyncio.Task[None]] = set()
    taken = 0
    while taken < count:
        msgs = [await inbox.get()]
        while batched and len(msgs) < min(BATCH, count - taken) and not inbox.empty():
            msgs.append(inbox.get_nowait())
        taken += len(msgs)
        for msg in msgs:
            acker.hand(msg)
        await gate.acquire()
        if inflight == 1:
            await forward(msgs)
            continue
        task = asyncio.ensure_future(forward(msgs))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    await acker.close()


async def bare_http(url: str, queue: str, sink: int, count: int, inflight: int) -> None:
    """The bare consumer of ``queue`` forwarding to the HTTP sink on port ``sink``, ``inflight``
    POSTs at a time."""
    async with aiohttp.ClientSession() as http:
        await consume(url, queue, count, http_delivery(http, sink), inflight=inflight)


async def bare_nats(
    url: str, nats_url: str, queue: str, to: str, count: int, inflight: int, batched: bool
) -> None:
    """The bare consumer of ``queue`` publishing to ``to`` on the NATS server ``nats_url`` (one
    nats-py client), flushed before the messages count as delivered."""
    nc = await nats.connect(nats_url)
    try:
        await consume(url, queue, count, nats_delivery(nc, to), inflight=inflight, batched=batched)
    finally:
        await nc.close()
