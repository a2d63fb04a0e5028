"""The gateway client process: config -> lifecycle -> delivery, with status and the ops port.

Shutdown is staged, each stage bounded and logged:

1. stop watching the config;
2. drain every source (``drain_grace``): the server writes what each source holds and ends its
   stream; delivery goes on meanwhile. Sources still draining then are stopped, then cancelled;
3. deliver what is queued (``grace_period``); what is still undelivered then is dropped, counted as
   ``shutdown`` and logged with its number;
4. close the ops port (so the last counts are there to scrape until the end), then the collector.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry

from common import collector, signals, tasks
from common.client.config_source import ConfigSource, FileConfigSource
from common.client.lifecycle import Lifecycle, Precheck
from common.client.model import ReceivedEvent
from common.client.ops import DEFAULT_OPS_PORT, OpsServer
from common.client.status import StatusBoard
from common.client.stream import UnackedBound
from common.retry import Backoff
from common.rpc import WINDOW_OPTIONS, eventing_stub
from common.settings import CollectorSettings

_log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    *WINDOW_OPTIONS,
]
"""A dead server is noticed within 40 s even when no event flows (the server permits these pings), and
a restarted one within 2 s: gRPC's own reconnect backoff would otherwise grow to two minutes, and the
server is normally in the same pod, where a connection attempt costs next to nothing."""


class Delivery(Protocol):
    """Where events go: the subscriber fan-out, or the stdout printer."""

    async def start(self) -> None: ...
    async def publish(self, received: ReceivedEvent) -> None: ...
    async def remove_source(self, source: str, grace: float) -> None: ...
    async def close(self, grace: float) -> None: ...
    def status(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ClientSettings:
    """The gateway client."""

    server: str = "localhost:9330"
    """``host:port`` of the gateway server; one channel to it, reused by every source."""
    ops_host: str = "0.0.0.0"
    """Interface of the ops port: probes and Prometheus come from outside the pod."""
    ops_port: int = DEFAULT_OPS_PORT
    """``/healthz``, ``/readyz``, ``/metrics``; 0 picks a free port, -1 turns the port off."""
    drain_grace: float = 10.0
    """Seconds a shutdown (or a source's removal) waits for sources to drain, that is for the server
    to write what they hold and end their streams, before stopping them. At least the server's own
    grace (10 s), so that in a pod stop the server's limit is the one that applies."""
    grace_period: float = 10.0
    """Seconds a shutdown then waits for queued events to be delivered before counting them as
    dropped. With ``drain_grace`` and a few seconds of closing, within Kubernetes' default 30 s."""
    bound: UnackedBound = field(default_factory=UnackedBound)
    """The most of one source's events held between "written to the stream" and "every subscriber is
    done with it" (events and bytes), asked of a server that offers the control channel."""
    channel_options: tuple[tuple[str, int], ...] = field(default_factory=lambda: tuple(CHANNEL_OPTIONS))
    """gRPC channel options (keepalive, reconnect backoff)."""
    gc: CollectorSettings = field(default_factory=CollectorSettings)
    """How garbage collection is paced (``--gc``, ``GATEWAY_GC``): see ``common.collector``. Shared
    with the server when both run in one process."""
    restart_backoff: Backoff = field(
        default_factory=lambda: Backoff(duration=0.5, factor=2.0, jitter=0.2, cap=30.0)
    )
    """Delays before a faulted source is restarted: 0.5 s doubling to 30 s. A source waiting for a server
    that went away retries as soon as the channel is ready again, whatever is left of its delay."""


class GatewayClient:
    """Runs until ``stop`` is set; ``status`` and ``ops_port`` are there for probes and tests."""

    def __init__(
        self,
        settings: ClientSettings,
        config: ConfigSource,
        delivery: Delivery,
        *,
        registries: tuple[CollectorRegistry, ...] = (),
        precheck: Precheck | None = None,
    ) -> None:
        self.settings = settings
        self._precheck = precheck
        self._registries = registries
        self.config = config
        self.delivery = delivery
        self.status = StatusBoard()
        if isinstance(config, FileConfigSource):  # a file broken from the start says why on /readyz
            config.report_to(self.status.config)
        self.ops_port = 0

    async def run(self, stop: asyncio.Event) -> None:
        ops = None
        if self.settings.ops_port >= 0:
            ops = OpsServer(
                self.status, self.settings.ops_host, self.settings.ops_port, self._extra, self._registries
            )
            self.ops_port = await ops.start()
        await self.delivery.start()
        paced = collector.acquire(self.settings.gc) if self.settings.gc.policy == "paced" else None
        async with grpc.aio.insecure_channel(
            self.settings.server, options=list(self.settings.channel_options)
        ) as ch:
            lifecycle = Lifecycle(
                eventing_stub(ch),
                self.status,
                self.delivery.publish,
                backoff=self.settings.restart_backoff,
                on_removed=self._removed,
                precheck=self._precheck,
                collector=paced,
                bound=self.settings.bound,
                drain_timeout=self.settings.drain_grace,
            )
            unhold = signals.holding(
                lambda: (lifecycle.held, "read off the streams and not yet accepted by every subscriber")
            )
            watcher = tasks.start(self._watch(lifecycle), name="event-source config watch", eternal=True)
            link = tasks.start(
                self._watch_server(ch, lifecycle), name="gateway server connection watch", eternal=True
            )
            try:
                await stop.wait()
            finally:
                _log.info(
                    "Stopping: no new config; draining the event sources (grace %.1fs).",
                    self.settings.drain_grace,
                )
                await tasks.stop(link, timeout=5.0)
                await tasks.stop(watcher, timeout=5.0)
                await lifecycle.close()
                _log.info(
                    "Event sources drained; delivering %d held event(s) (grace %.1fs).",
                    lifecycle.held,
                    self.settings.grace_period,
                )
                await self.delivery.close(self.settings.grace_period)
                dropped = lifecycle.cut_off
                dropped += sum(s.get("dropped", {}).get("shutdown", 0) for s in self.delivery.status())
                if dropped:
                    _log.warning(
                        "Delivery stopped: %d event(s) dropped at shutdown (reason shutdown).", dropped
                    )
                else:
                    _log.info("Delivery stopped: every event read was delivered or settled.")
                unhold()
                if ops is not None:
                    await ops.stop()
                if paced is not None:
                    await collector.release()
                _log.info("The gateway client has stopped.")

    async def _watch(self, lifecycle: Lifecycle) -> None:
        async for snapshot in self.config.snapshots():
            self.status.config(True, f"{len(snapshot.specs)} event source(s) from {snapshot.origin}")
            await lifecycle.apply(snapshot.specs)

    async def _watch_server(self, channel: grpc.aio.Channel, lifecycle: Lifecycle) -> None:
        """Keep ``status.server_connected`` true to the channel's state, with or without sources, and
        wake the sources waiting to restart the moment the server is back."""
        while True:
            state = channel.get_state(try_to_connect=True)
            ready = state is grpc.ChannelConnectivity.READY
            self.status.connected(ready)
            if ready:
                lifecycle.server_ready()
            await channel.wait_for_state_change(state)

    async def _removed(self, source: str) -> None:
        await self.delivery.remove_source(source, self.settings.grace_period)

    def _extra(self) -> dict[str, Any]:
        return {"subscribers": self.delivery.status()}
