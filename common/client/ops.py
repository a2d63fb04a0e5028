"""The client's operations port: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

``/readyz`` is 200 once the config is loaded and the server is connected; its JSON body lists every
source's node, so one failed source is visible without taking the pod out of service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.client.metrics import REGISTRY
from common.client.status import StatusBoard
from common.metrics_http import metrics_handler, start_site
from common.settings import DEFAULT_OPS_PORT

__all__ = ["DEFAULT_OPS_PORT", "OpsServer"]


_log = logging.getLogger(__name__)


class OpsServer:
    """A small aiohttp server for probes and metrics."""

    def __init__(
        self,
        status: StatusBoard,
        host: str,
        port: int,
        extra: Callable[[], dict[str, Any]] | None = None,
        registries: tuple[CollectorRegistry, ...] = (),
    ) -> None:
        self._status = status
        self._registries = (REGISTRY, *registries)
        self._extra = extra or dict
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The bound port, once started."""

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", metrics_handler(self._registries))
        self._runner, self.port = await start_site(app, self._host, self._port)
        _log.info(
            "Operations endpoints on http://%s:%d (/healthz, /readyz, /metrics).", self._host, self.port
        )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        body = self._status.snapshot() | self._extra()
        return web.json_response(body, status=200 if self._status.ready else 503)
