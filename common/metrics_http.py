"""Serving Prometheus registries over HTTP: the ``/metrics`` handler, and a small server for it.

The client's ops port uses the handler; ``gateway serve --metrics-port`` runs the server, so a gateway
server container can expose its kind's metrics (a webhook's responses by code, say).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_log = logging.getLogger(__name__)


def metrics_handler(
    registries: tuple[CollectorRegistry, ...],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A ``/metrics`` handler exposing every registry in ``registries``."""

    async def handle(request: web.Request) -> web.Response:
        body = b"".join(generate_latest(registry) for registry in registries)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 picks a free port); the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)


class MetricsServer:
    """``/metrics`` alone, on its own port."""

    def __init__(self, registries: tuple[CollectorRegistry, ...], host: str, port: int) -> None:
        self._registries, self._host, self._port = registries, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(self._registries))
        self._runner, port = await start_site(app, self._host, self._port)
        _log.info("Metrics on http://%s:%d/metrics.", self._host, port)
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
