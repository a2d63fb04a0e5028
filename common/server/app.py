"""The gateway server process: bind, serve Eventing and gRPC health, shut down in stages.

``GatewayServer.start`` returns only when the port is bound and serving (explicit readiness).
``stop`` is staged, each stage logged:

1. health goes NOT_SERVING, new streams are refused, and every source is drained: it takes nothing
   new (a webhook answers 503 with ``Retry-After``) and what it holds is written;
2. within the grace period each stream ends UNAVAILABLE once its client has read it (the control
   channel's end handshake), so the client keeps every event and retries the source later;
3. sources still running then are stopped: what they hold unwritten is refused (a webhook caller gets
   503, never a 200), and the calls get one more second before gRPC cancels them;
4. the kind's shared resources (a webhook's ports) close last, so callers see 503 until the exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import collector, loops, signals
from common.kinds import GatewayKind
from common.rpc import WINDOW_OPTIONS, eventing_pb2, eventing_pb2_grpc
from common.server.servicer import EventingServicer
from common.settings import ServerSettings, SettingsError

_log = logging.getLogger(__name__)
SERVICE_NAME = eventing_pb2.DESCRIPTOR.services_by_name["Eventing"].full_name
HALT_WAIT = 2.0
"""Seconds stopped sessions get to end their streams once the grace period is over."""


class GatewayServer:
    """One gateway kind served over gRPC on one port."""

    def __init__(self, kind: GatewayKind[Any], settings: ServerSettings) -> None:
        self.kind = kind
        self.settings = settings
        self.servicer = EventingServicer(kind, settings)
        self.health = health.aio.HealthServicer()
        self.port = 0
        """The bound port, once started."""
        self._server: grpc.aio.Server | None = None
        self._unhold: Callable[[], None] | None = None
        """Stops counting this server's events as abandoned on a forced exit."""
        self.collector: collector.PacedCollector | None = None
        """The paced garbage collector while serving under the ``paced`` policy."""

    async def start(self) -> int:
        """Bind and start serving; returns the bound port. Raises ``SettingsError`` if it cannot bind."""
        pending = self.settings.max_pending_rpcs
        options = [
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", pending),
            ("grpc.server.max_pending_requests_hard_limit", pending),
            # The client pings every 30 s to notice a dead server; allow it (gRPC refuses pings by default).
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            *WINDOW_OPTIONS,
        ]
        server = grpc.aio.server(options=options)
        listen_host = self.settings.listen_host
        if listen_host is not None:
            if self.kind.listen_on is None:
                _log.info(
                    "The %s kind has no listeners of its own; --listen-host changes nothing.", self.kind.name
                )
            else:
                self.kind.listen_on(listen_host)
        eventing_pb2_grpc.add_EventingServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SettingsError(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise SettingsError(f"cannot listen on {address}: the address is in use or not available")
        await server.start()
        self._server = server
        if self.settings.gc.policy == "paced":
            self.collector = self.servicer.collector = collector.acquire(self.settings.gc)
        reserved = {self.port, self.settings.ops_port, self.settings.metrics_port}
        self.servicer.reserved_ports = frozenset(reserved - {0, -1})
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._unhold = signals.holding(lambda: (self.servicer.held, "not yet written to a stream"))
        _log.info("Event loop: %s.", loops.running())
        _log.info("Serving the %s gateway on %s:%d.", self.kind.name, self.settings.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Staged shutdown bounded by ``grace`` seconds (the settings' grace period by default)."""
        if self._server is None:
            return
        grace = self.settings.grace_period if grace is None else grace
        running = len(self.servicer.running)
        _log.info(
            "Shutting down: refusing new streams; draining %d running event source(s) (grace %.1fs).",
            running,
            grace,
        )
        await self.health.enter_graceful_shutdown()
        self.servicer.shutdown()
        try:
            async with asyncio.timeout(grace):
                await self.servicer.wait_idle()
        except TimeoutError:
            held = self.servicer.held
            count = self.servicer.halt()
            _log.error(
                "%d event source(s) still running after %.1fs; stopping them: %d event(s) not yet "
                "written are refused (their callers are told to retry).",
                count,
                grace,
                held,
            )
            try:
                async with asyncio.timeout(HALT_WAIT):
                    await self.servicer.wait_idle()
            except TimeoutError:
                _log.error("Streams still open %.1fs after their sources were stopped.", HALT_WAIT)
        else:
            if running:
                _log.info("Every event source has drained.")
        try:
            await self._server.stop(grace=min(1.0, grace))
            self._server = None
            if self.kind.close is not None:
                await self.kind.close()
        finally:
            if self._unhold is not None:
                self._unhold()
            await self._stop_collector()
        _log.info("The %s gateway server has stopped.", self.kind.name)

    async def _stop_collector(self) -> None:
        if self.collector is not None:
            self.collector = self.servicer.collector = None
            await collector.release()


async def serve(kind: GatewayKind[Any], settings: ServerSettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down in stages."""
    server = GatewayServer(kind, settings)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
