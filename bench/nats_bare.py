"""The bare nats-py consumers ``bench.nats_e2e`` measures the gateway against: a durable JetStream
pull consumer that forwards each message to the subscriber, then acks it, with the gateway's
guarantee (a message is acked only once the subscriber has it).

Forwarding, the same as the gateway client's:

* HTTP: one POST per message (binary mode, the ``ce-*`` headers), acked once the 200 is in;
* NATS (core): publish, then ``flush``, whose PONG says the server has everything published before
  it; acked after that PONG. That is the promise of the client's ``nats://`` delivery (one flush per
  batch, nothing awaited from the receivers: core NATS has no receipt). The sink does not reply.

How many at a time: ``inflight`` messages each on its own (1: in order, one at a time; 16: order
given up for HTTP), or ``batched``: a fetch's messages (up to 64) published together, one flush, then
all acked, as the client's NATS lane does with what it has queued.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

STREAM, SUBJECT = "ORDERS", "orders"
"""The stream, capturing ``orders.>``; each subscriber side reads its own subject in it."""
SENT_AT = "x-sent-at"
"""The publisher's send time (``time.time()``), a NATS header the sink reads (``bench.sinks``)."""
FETCH = 64
"""Messages asked for at once, as the gateway's JetStream source does (``FETCH_BATCH``)."""

Deliver = Callable[[Sequence[Any]], Awaitable[None]]
"""Forward these messages to the subscriber; return once it has them (as promised for the transport)."""


def ce_headers(msg: Any) -> dict[str, str]:
    """The CloudEvent attributes of ``msg`` as ``ce-*`` headers (binary mode), its send stamp kept."""
    assert msg.metadata is not None
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"bare:{STREAM}:{msg.metadata.sequence.stream}",
        "ce-source": "bench-gateway",
        "ce-type": "nats",
        "ce-subject": "orders",
    }
    if msg.headers and SENT_AT in msg.headers:
        headers[SENT_AT] = msg.headers[SENT_AT]
    return headers


def http_delivery(http: aiohttp.ClientSession, sink: int) -> Deliver:
    """POST each message to the HTTP sink on port ``sink``, one after the other; each answered 200."""

    async def deliver(msgs: Sequence[Any]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{sink}/", data=msg.data, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    return deliver


def nats_delivery(nc: Client, subject: str) -> Deliver:
    """Publish each message on ``subject`` (core NATS), then flush once: the server has them all."""

    async def deliver(msgs: Sequence[Any]) -> None:
        for msg in msgs:
            headers = {**ce_headers(msg), "ce-datacontenttype": "application/json"}
            await nc.publish(subject, msg.data, headers=headers)
        await nc.flush()

    return deliver


async def consume(
    url: str,
    subject: str,
    count: int,
    durable: str,
    deliver: Callable[[Client], Deliver],
    *,
    inflight: int = 1,
    batched: bool = False,
    ready: asyncio.Event | None = None,
) -> None:
    """Take ``count`` messages on ``subject`` off a fresh durable on the stream (with ``ready``: one
    that takes only new messages, set once subscribed) and hand each to ``deliver(connection)``,
    acking it after."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW) if ready is not None else None
    sub = await js.pull_subscribe(subject, durable=durable, stream=STREAM, config=config)
    if ready is not None:
        ready.set()
    forward_to = deliver(nc)
    gate = asyncio.Semaphore(inflight)

    async def forward(msgs: Sequence[Any]) -> None:
        try:
            await forward_to(msgs)
            for msg in msgs:
                await msg.ack()
        finally:
            gate.release()

    pending: set[asyncio.Task[None]] = set()
    taken = 0
    while taken < count:
        msgs = await sub.fetch(min(FETCH, count - taken), timeout=10)
        taken += len(msgs)
        for group in [msgs] if batched else [[msg] for msg in msgs]:
            await gate.acquire()
            if inflight == 1:
                await forward(group)
                continue
            task = asyncio.ensure_future(forward(group))
            pending.add(task)
            task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    await nc.close()


async def bare_http(
    url: str,
    subject: str,
    sink: int,
    count: int,
    durable: str,
    inflight: int,
    ready: asyncio.Event | None = None,
) -> None:
    """The bare consumer of ``subject`` forwarding to the HTTP sink on port ``sink``, ``inflight``
    POSTs at a time."""
    async with aiohttp.ClientSession() as http:
        deliver = http_delivery(http, sink)
        await consume(url, subject, count, durable, lambda nc: deliver, inflight=inflight, ready=ready)


async def bare_nats(
    url: str, subject: str, to: str, count: int, durable: str, inflight: int, batched: bool
) -> None:
    """The bare consumer of ``subject`` publishing to ``to`` (on the connection it consumes on: one
    nats-py client, as a hand-written forwarder has), flushed before the acks."""
    deliver = functools.partial(nats_delivery, subject=to)
    await consume(url, subject, count, durable, deliver, inflight=inflight, batched=batched)
