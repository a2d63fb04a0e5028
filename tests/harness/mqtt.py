"""MQTT helpers for tests against a real mosquitto: source configs, a mosquitto that queues without
limit, publishers whose every QoS 1 message is confirmed by the broker's PUBACK, and a ledger of what
an HTTP subscriber received across its restarts.

An MQTT event's id is ``<source>:<fresh uuid4>`` (``gateways.mqtt.binding``): a message the broker
sends again gets a new id. So the publishers here give each message a unique payload (``m-<n>``), and
the ledger tells messages apart by payload, with the ``dup`` extension of each arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness.brokers_base import require, running
from tests.harness.brokers_mosquitto import MISSING, Mosquitto, mosquitto_binary
from tests.harness.http_sink import RestartingSink

STEADY_RETRY = "backoff: {duration: 200ms, factor: 1, jitter: 0, steps: 0}"
"""A source retried every 200 ms: it reconnects soon after a broker comes back (a test waits for it)."""
PUBLISH_INTERVAL = 0.005
"""Seconds between two messages of a steady ``Publishing``: a hundred or two a second."""
CONNECT_TIMEOUT = 10.0


def source(url: str, topic: str, client_id: str, *lines: str) -> str:
    """A source's YAML, retried steadily, then ``lines``."""
    return "\n".join([f"url: {url}", f"topic: '{topic}'", f"clientId: {client_id}", STEADY_RETRY, *lines])


class UnboundedMosquitto(Mosquitto):
    """A mosquitto whose per-client queue has no limit. By default it keeps at most 1,000 QoS 1/2
    messages queued for a client beyond those in flight and drops the rest, PUBACKed to the
    publisher all the same: a subscriber down for 30 s at a few hundred messages a second would lose
    messages to the broker's config, which is not what a ledger test is about."""

    def command(self) -> list[str]:
        cmd = super().command()
        with self.config_path.open("a") as config:
            config.write("max_queued_messages 0\n")
        return cmd


@contextlib.asynccontextmanager
async def unbounded_mosquitto() -> AsyncIterator[Mosquitto]:
    """A running ``UnboundedMosquitto`` of the test's own."""
    binary = require(mosquitto_binary(), MISSING)
    async with running(lambda workdir: UnboundedMosquitto(binary, workdir)) as server:
        yield server


class Publisher:
    """A paho client of the test's own (on paho's network thread) publishing at QoS 1 under MQTT
    3.1.1: ``publish`` returns a future resolved by the broker's PUBACK. With ``persistent`` (clean
    session off) what is published while the broker is away waits in paho and is sent when it
    connects again (it tries every second)."""

    def __init__(self, port: int, client_id: str, *, persistent: bool = False) -> None:
        self.port = port
        self._loop = asyncio.get_running_loop()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._connected = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[None]] = {}

    async def __aenter__(self) -> Publisher:
        self._client.connect_async("127.0.0.1", self.port)
        self._client.loop_start()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await self._connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, code: Any, properties: Any) -> None:
        if not code.is_failure:
            self._loop.call_soon_threadsafe(self._connected.set)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, code: Any, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._published, mid)

    def _published(self, mid: int) -> None:
        # Runs on the loop after ``publish`` registered ``mid``: a PUBACK paho read meanwhile waits here.
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def publish(self, topic: str, payload: str) -> asyncio.Future[None]:
        """Publish ``payload`` at QoS 1 (queued in paho while disconnected); done on its PUBACK."""
        info = self._client.publish(topic, payload.encode(), qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"paho could not publish {payload!r}: {mqtt.error_string(info.rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting[info.mid] = future
        return future

    async def publish_all(self, topic: str, payloads: Iterable[str], timeout: float = 20.0) -> list[str]:
        """Publish each payload, each confirmed before the next; the payloads."""
        sent: list[str] = []
        async with asyncio.timeout(timeout):
            for payload in payloads:
                await self.publish(topic, payload)
                sent.append(payload)
        return sent


@dataclass
class Publishing:
    """Messages ``m-<n>`` published to ``topic`` at QoS 1 one after the other until the block ends:
    ``burst`` at once, then one every ``PUBLISH_INTERVAL``; ``confirmed`` holds each payload once
    PUBACKed."""

    port: int
    topic: str
    burst: int = 0
    client_id: str = "ledger-publisher"
    confirmed: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Publishing:
        self._publisher = await Publisher(self.port, self.client_id).__aenter__()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            await self._task
        finally:
            await self._publisher.__aexit__()

    async def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            payload = f"m-{n}"
            await asyncio.wait_for(self._publisher.publish(self.topic, payload), CONNECT_TIMEOUT)
            self.confirmed.append(payload)
            if n >= self.burst:
                await asyncio.sleep(PUBLISH_INTERVAL)  # the publisher's pace, not a wait for readiness


def number(payload: str) -> int:
    """``n`` of a ``Publishing`` payload ``m-<n>``."""
    return int(payload.removeprefix("m-"))


class Ledger(RestartingSink):
    """What an HTTP subscriber on ``port`` received for ``source`` across its restarts: per arrival,
    ``(payload, dup)`` (binary mode: the body and the ``ce-dup`` header)."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(port)
        self.source = source

    def arrivals(self) -> list[tuple[str, bool]]:
        return [
            (r.body.decode(), r.headers.get("ce-dup") == "true")
            for r in self.received()
            if r.headers.get("ce-subject") == self.source
        ]

    def payloads(self) -> set[str]:
        return {payload for payload, _ in self.arrivals()}

    def counts(self) -> Counter[str]:
        return Counter(payload for payload, _ in self.arrivals())

    def first_arrivals(self) -> list[int]:
        """The message numbers in the order they first arrived (a repeat is not a first arrival)."""
        seen: dict[str, None] = {}
        for payload, _ in self.arrivals():
            seen.setdefault(payload, None)
        return [number(payload) for payload in seen]
