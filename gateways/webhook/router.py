"""Ports and routes: one HTTP server per port, shared by every webhook source on it, routed by (port, path).

aiohttp's router is frozen once a server starts, so each port has one catch-all handler that looks
routes up in a dict this module changes while the server runs:

- a source's start adds its route (binding the port if it is the first route there);
- a source the client removed (``SourceContext.end`` is ``removed``, or ``cancelled`` by a v0.11
  client) loses its route at once: 404 from then on;
- any other end (a change or a restart, the client or the server stopping, a client that was lost,
  the source failing) leaves the route answering 503 with ``Retry-After`` for ``grace`` seconds, so
  callers retry rather than conclude the endpoint is gone; a source that starts again on the route
  (the client restarts sources) takes it over;
- when a port's last route goes, its server closes and the port is released.

v0.11 keyed routes by path alone, never removed them and never closed a port; this keys by
(port, path, method), removes, and closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from common import tasks
from common.errors import SourceUnavailable
from common.kinds import GONE_AT_ONCE
from gateways.webhook import metrics
from gateways.webhook.config import TlsFiles, WebhookConfig
from gateways.webhook.handler import PortHandler
from gateways.webhook.route import Logger, Route
from gateways.webhook.tls import ReloadingTls

_log = logging.getLogger(__name__)

UNAVAILABLE_GRACE = 30.0
"""Seconds a route whose stream broke answers 503 before it goes: the client restarts a failed source
within this (0.5 s doubling), and a stopping server exits well within it."""
PORT_CLOSE_TIMEOUT = 2.0
"""Seconds requests in flight get to finish when their port closes."""
KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle keep-alive connection stays open (aiohttp's own default is an hour)."""
LINGERING_TIME = 2.0
"""Seconds an unread body is drained after a refusal (413, 401...) so the caller can read the answer."""


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp logs each malformed request as an error with a traceback. On a port open to the internet
    those are scanners and broken clients, not faults of the gateway: one debug line each, and the
    parser's 400 counted in ``webhook_responses_total`` like every other answer. Anything else (a
    failure in the handler) stays an error with its traceback."""

    def __init__(self, port: int) -> None:
        super().__init__(logging.getLogger(__name__))
        self._refused = metrics.RESPONSES.labels(port=str(port), code="400")

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._refused.inc()
            super().debug("Refused a malformed request: %s: %s", str(msg) % args, exc_info.message)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):  # a first request that is not HTTP at all
            self._refused.inc()
        super().debug(msg, *args, exc_info=exc_info, **kwargs)


class PortServer:
    """The HTTP server of one port and its routes: path -> method -> route."""

    def __init__(self, port: int, tls: TlsFiles | None, logger: Logger) -> None:
        self.port = port
        self.tls_files = tls
        self._tls = ReloadingTls(tls, logger) if tls is not None else None
        self.routes: dict[str, dict[str, Route]] = {}
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str | None) -> None:
        """Listen; ``SourceUnavailable`` when the port is taken (by another process, or not free yet)."""
        server = web.Server(
            PortHandler(self.port, self.routes.get),
            access_log=None,
            logger=_ServerLog(self.port),
            auto_decompress=False,  # the body reaches subscribers as sent, compressed or not
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            lingering_time=LINGERING_TIME,
        )
        runner = web.ServerRunner(server, shutdown_timeout=PORT_CLOSE_TIMEOUT)
        await runner.setup()
        context = self._tls.context if self._tls is not None else None
        try:
            await web.TCPSite(runner, host, self.port, ssl_context=context).start()
        except BaseException as exc:  # also a cancelled start: no socket may stay bound behind it
            await runner.cleanup()
            if isinstance(exc, OSError):
                raise SourceUnavailable(f"cannot listen on port {self.port}: {exc.strerror or exc}") from exc
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def get(self, config: WebhookConfig) -> Route | None:
        return self.routes.get(config.endpoint, {}).get(config.method)

    def add(self, route: Route) -> Route | None:
        """Serve ``route``; the route it replaces, if any."""
        methods = self.routes.setdefault(route.config.endpoint, {})
        previous = methods.get(route.config.method)
        methods[route.config.method] = route
        return previous

    def remove(self, route: Route) -> None:
        methods = self.routes.get(route.config.endpoint, {})
        if methods.get(route.config.method) is route:
            del methods[route.config.method]
            if not methods:
                del self.routes[route.config.endpoint]

    def all(self) -> Iterator[Route]:
        return (route for methods in list(self.routes.values()) for route in list(methods.values()))


class Router:
    """Every webhook port of the process. ``host`` None listens on all interfaces."""

    def __init__(self, *, host: str | None = None, grace: float = UNAVAILABLE_GRACE) -> None:
        self.host = host
        self.grace = grace
        self._ports: dict[int, PortServer] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def listen_on(self, host: str) -> None:
        """Bind ports opened from now on to ``host`` only (``--listen-host``)."""
        self.host = host

    @property
    def ports(self) -> list[int]:
        """The ports being listened on."""
        return sorted(self._ports)

    def lookup(self, port: int, path: str) -> Mapping[str, Route]:
        """The routes of ``path`` on ``port`` by method (empty when there are none)."""
        server = self._ports.get(port)
        return dict(server.routes.get(path, {})) if server is not None else {}

    def _lock(self, port: int) -> asyncio.Lock:
        return self._locks.setdefault(port, asyncio.Lock())

    async def register(self, source: str, config: WebhookConfig, logger: Logger) -> Route:
        """Serve ``config``'s route for ``source``, binding its port if needed.

        ``SourceUnavailable`` when the port cannot be bound, the TLS files do not load, or another
        source still serves the port with other TLS settings (it is stopping, or validation would
        have refused this one): retried by the client. ``SourceFailed`` for an unset secret variable.
        """
        route = Route.of(source, config, logger)
        async with self._lock(config.port):
            server = self._ports.get(config.port)
            if server is not None and server.tls_files != config.tls:
                live = [r for r in server.all() if r.available]
                if live:
                    raise SourceUnavailable(
                        f"port {config.port} is still served with other TLS settings by event source "
                        f"{live[0].source!r}"
                    )
                await self._drop(server)
                server = None
            if server is None:
                server = PortServer(config.port, config.tls, logger)
                await server.start(self.host)
                self._ports[config.port] = server
                _log.info("Listening for webhooks on port %d%s.", config.port, " (TLS)" if config.tls else "")
            previous = server.add(route)
            self._forget_leftovers(route)
        if previous is not None and previous.available and previous.source != source:
            logger.warning(
                "Taking %s over from event source %r, which is stopping.", config.route, previous.source
            )
        if previous is not None and not previous.available:
            previous.close()
        logger.info("Serving %s.", config.route)
        return route

    def _forget_leftovers(self, route: Route) -> None:
        """The source is back with (perhaps) another route: the ones its last run left answering 503
        go now (404), as its new config does not serve them."""
        for server in list(self._ports.values()):
            for old in list(server.all()):
                if old.source == route.source and old is not route and not old.available:
                    old.close()
                    server.remove(old)
                    old.logger.info(
                        "No longer serving %s: the event source now serves %s.",
                        old.config.route,
                        route.config.route,
                    )
                    self._close_if_empty(server)

    def release(self, route: Route, end: str) -> None:
        """``route``'s source has ended: after ``removed`` or ``cancelled`` the route goes (404 from now
        on); otherwise it answers 503 for ``grace`` seconds first."""
        route.close()
        server = self._ports.get(route.config.port)
        if server is None or server.get(route.config) is not route:
            return
        if end in GONE_AT_ONCE or self.grace <= 0:
            server.remove(route)
            route.logger.info("No longer serving %s.", route.config.route)
            self._close_if_empty(server)
            return
        route.available = False
        route.expiry = asyncio.get_running_loop().call_later(self.grace, self._expire, route)
        route.logger.warning(
            "The event source ended (%s); %s answers 503 for %.0fs unless the source starts again.",
            end or "failed",
            route.config.route,
            self.grace,
        )

    def _expire(self, route: Route) -> None:
        route.expiry = None
        server = self._ports.get(route.config.port)
        if server is not None and server.get(route.config) is route:
            server.remove(route)
            route.logger.info(
                "No longer serving %s: the event source did not start again.", route.config.route
            )
            self._close_if_empty(server)

    def _close_if_empty(self, server: PortServer) -> None:
        if not server.routes:
            task = tasks.start(self._close_port(server), name=f"closing webhook port {server.port}")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_port(self, server: PortServer) -> None:
        async with self._lock(server.port):
            if not server.routes and self._ports.get(server.port) is server:
                await self._drop(server)
                _log.info("Closed webhook port %d: its last route has gone.", server.port)

    async def _drop(self, server: PortServer) -> None:
        """Close ``server``'s port. Its routes answer 503 until it is closed: a caller on a keep-alive
        connection may still send a request while the server shuts down, and a 404 would tell it the
        endpoint is gone."""
        if self._ports.get(server.port) is server:
            del self._ports[server.port]
        for route in server.all():
            route.close()
            route.available = False
        await server.stop()
        server.routes.clear()

    async def close(self) -> None:
        """Close every port now; running sources end with ``SourceUnavailable`` (tests, process exit)."""
        for port in list(self._ports):
            async with self._lock(port):
                server = self._ports.get(port)
                if server is not None:
                    await self._drop(server)
        if self._closing:
            await asyncio.wait(set(self._closing))
        self._locks.clear()


ROUTER = Router()
"""The process's router: every webhook source of a gateway server registers here."""
