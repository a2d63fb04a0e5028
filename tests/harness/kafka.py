"""Kafka helpers for tests against Tansu: topics, plain producers that remember where each record was
stored, the ids a subscriber received, and a gateway client's status of a source.

A Kafka event's id is ``<topic>/<partition>/<offset>`` (``gateways.kafka.binding``), so a record's
``RecordMetadata`` from the producer names the event it becomes; ``ids`` reads them back from a
``ledger_sink`` ledger. Tansu takes only plain producers (no idempotence, no transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.harness.gateways import Gateway

GROUP_SESSION = "1500ms"
"""The group session for Tansu, which holds a JoinGroup about half of it: a join takes about 1 s."""
FAST_RETRY = "backoff: {duration: 100ms, factor: 2, jitter: 0, steps: 0}"
"""A source's first start retried quickly (a test waits for it, never sleeps)."""
PRODUCE_INTERVAL = 0.005
"""Seconds between two records of a ``Producing`` producer: a steady stream, a few hundred a second."""


def group_source(url: str, topic: str, group: str, *, oldest: bool = True) -> str:
    """A consumer-group source's YAML, with the short session Tansu needs."""
    block = f"{{groupName: {group}, oldest: {str(oldest).lower()}, sessionTimeout: {GROUP_SESSION}}}"
    return f"url: {url}\ntopic: {topic}\n{FAST_RETRY}\nconsumerGroup: {block}"


async def create_topic(url: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(url: str) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer whose every record is acknowledged by the broker before ``send_and_wait`` returns."""
    client = AIOKafkaProducer(bootstrap_servers=url, acks="all", enable_idempotence=False)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def produce(
    client: AIOKafkaProducer, topic: str, values: Iterable[str], partitions: int = 1
) -> dict[str, str]:
    """Send each value (round robin over ``partitions``); event id -> value, as the broker stored them."""
    stored: dict[str, str] = {}
    for n, value in enumerate(values):
        meta = await client.send_and_wait(topic, value.encode(), partition=n % partitions)
        stored[f"{meta.topic}/{meta.partition}/{meta.offset}"] = value
    return stored


@dataclass
class Producing:
    """Records written to ``topic`` every few milliseconds, round robin over its partitions, until the
    block ends; ``stored`` holds each record's event id once the broker has acknowledged it."""

    url: str
    topic: str
    partitions: int
    stored: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Producing:
        self._client = AIOKafkaProducer(bootstrap_servers=self.url, acks="all", enable_idempotence=False)
        await self._client.start()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            await self._task
        finally:
            await self._client.stop()

    async def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            meta = await self._client.send_and_wait(
                self.topic, f"record {n}".encode(), partition=n % self.partitions
            )
            self.stored.append(f"{meta.topic}/{meta.partition}/{meta.offset}")
            await asyncio.sleep(PRODUCE_INTERVAL)  # the producer's pace, not a wait for readiness


def ids(ledger: Path, topic: str) -> list[str]:
    """The event ids of ``topic`` a ``ledger_sink`` received, in arrival order, repeats kept."""
    if not ledger.exists():
        return []
    return [line for line in ledger.read_text().splitlines() if line.startswith(f"{topic}/")]


def first_arrivals(received: Iterable[str]) -> dict[int, list[int]]:
    """Per partition, the offsets in the order they first arrived (a repeat is not a first arrival)."""
    seen: set[str] = set()
    found: dict[int, list[int]] = {}
    for event_id in received:
        if event_id in seen:
            continue
        seen.add(event_id)
        _, partition, offset = event_id.rsplit("/", 2)
        found.setdefault(int(partition), []).append(int(offset))
    return found


async def readyz(gateway: Gateway) -> dict[str, Any]:
    """The client's ``/readyz`` body (whatever its status code)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gateway.ops_port}/readyz") as answer,
    ):
        found: dict[str, Any] = await answer.json()
        return found


async def node(gateway: Gateway, source: str) -> dict[str, Any]:
    """The client's status node of ``source`` (``{}`` when it has none)."""
    found: dict[str, Any] = (await readyz(gateway))["nodes"].get(source, {})
    return found


async def phase_is(gateway: Gateway, source: str, phase: str, part: str = "") -> bool:
    """Whether ``source``'s node is in ``phase`` with ``part`` in its message."""
    found = await node(gateway, source)
    return found.get("phase") == phase and part in str(found.get("message", ""))
