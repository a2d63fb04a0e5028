"""Putting a client together: ``gateway client`` (against a server) and ``gateway run`` (standalone).

Standalone runs the server and the client in one process, talking gRPC over a loopback port exactly
as the two containers of a pod do, so what works standalone works in a pod.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from common.client.app import ClientSettings, Delivery, GatewayClient
from common.client.cloudevent import encode, reads_json
from common.client.config_source import ConfigSource
from common.client.delivery.fanout import Fanout
from common.client.delivery.settings import DeliverySettings
from common.client.delivery.subscriber import Subscriber
from common.client.jsontext import Payload
from common.client.model import Format, GatewayIdentity, Message, ReceivedEvent
from common.client.printer import Printer
from common.client.subscribers import parse_subscriber
from common.kinds import GatewayKind
from common.server.app import GatewayServer
from common.server.metrics import REGISTRY as SERVER_REGISTRY
from common.settings import ServerSettings
from common.validate import precheck_for


@dataclass(frozen=True)
class DeliveryOptions:
    """Where and how events are delivered."""

    subscribers: tuple[str, ...] = ()
    """Subscriber URLs; none prints each CloudEvent as a JSON line on stdout."""
    format: Format = Format.BINARY
    """The default format; a URL's ``?format=`` overrides it."""
    settings: DeliverySettings = field(default_factory=DeliverySettings)
    """Queues, retries and timeouts."""


OFF_LOOP_BYTES = 64 * 1024
"""Payloads larger than this have their JSON text looked for off the event loop (a 3 MiB one of
nested arrays takes about a second)."""


class FanoutDelivery:
    """The subscribers' fan-out, encoding with this gateway's identity."""

    def __init__(self, fanout: Fanout, gateway: GatewayIdentity) -> None:
        self.fanout = fanout
        self._gateway = gateway

    async def start(self) -> None:
        await self.fanout.start()

    async def publish(self, received: ReceivedEvent) -> None:
        """Encode ``received`` for every subscriber and queue it. A large payload that may be JSON is
        checked on a worker thread first: the event loop keeps serving the other sources meanwhile."""
        payload = Payload(received.event.payload)
        if len(payload.data) > OFF_LOOP_BYTES and reads_json(received):
            await asyncio.to_thread(lambda: payload.json)
        monotonic = time.monotonic()

        def encoded(event: ReceivedEvent, fmt: Format) -> Message:
            return encode(event, self._gateway, fmt, received_monotonic=monotonic, payload=payload)

        await self.fanout.publish(received, encoded)

    async def remove_source(self, source: str, grace: float) -> None:
        await self.fanout.remove_source(source, grace)

    async def close(self, grace: float) -> None:
        await self.fanout.close(grace)

    def status(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.fanout.status()]


def build_delivery(options: DeliveryOptions, gateway: GatewayIdentity, out: TextIO) -> Delivery:
    """The fan-out to ``options.subscribers``, or the stdout printer when there are none."""
    if not options.subscribers:
        return Printer(gateway, out)
    specs = [parse_subscriber(url, options.format) for url in options.subscribers]
    subscribers = [Subscriber(spec, options.settings, gateway=gateway.name) for spec in specs]
    return FanoutDelivery(Fanout(subscribers), gateway)


async def run_client(
    settings: ClientSettings,
    config: ConfigSource,
    delivery: Delivery,
    stop: asyncio.Event,
    *,
    registries: tuple[CollectorRegistry, ...] = (),
    kind: GatewayKind[Any] | None = None,
    server_port: int = 0,
) -> GatewayClient:
    """Run a client until ``stop`` is set; ``registries`` are served on its ``/metrics`` too.

    With ``kind`` (installed here), each snapshot is checked locally before anything starts, so
    sources that clash with each other are all reported, whichever would have started first.
    """
    precheck = None
    if kind is not None:
        precheck = precheck_for(kind, frozenset({server_port, settings.ops_port} - {0, -1}))
    client = GatewayClient(settings, config, delivery, registries=registries, precheck=precheck)
    await client.run(stop)
    return client


async def run_standalone(
    kind: GatewayKind[Any],
    config: ConfigSource,
    delivery: Delivery,
    stop: asyncio.Event,
    *,
    settings: ClientSettings,
    listen_host: str | None = None,
) -> None:
    """Serve ``kind`` on a free loopback port and run a client against it until ``stop`` is set; both
    share the process's garbage collector, paced by ``settings.gc``.

    On ``stop`` the client goes first: it drains every source over the control channel (the sources
    take nothing new: a webhook answers 503), delivers, and only then is the server stopped."""
    server = GatewayServer(kind, ServerSettings(port=0, gc=settings.gc, listen_host=listen_host))
    port = await server.start()
    try:
        client_settings = dataclasses.replace(settings, server=f"127.0.0.1:{port}")
        registries = (SERVER_REGISTRY, *((kind.metrics,) if kind.metrics is not None else ()))
        await run_client(
            client_settings, config, delivery, stop, registries=registries, kind=kind, server_port=port
        )
    finally:
        await server.stop(grace=2.0)


def gateway_identity(kind: str, name: str) -> GatewayIdentity:
    """``--name``, else ``GATEWAY_NAME``, else ``<kind>-gateway``."""
    return GatewayIdentity(name=name or f"{kind}-gateway", kind=kind)


def subscriber_urls(values: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(values or ())
