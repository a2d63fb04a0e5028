"""A real HTTP subscriber on 127.0.0.1: records every POST and answers what the test says."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpSink:
    """Records requests by path; ``status`` is what it answers (200 unless the test changes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: dict[str, list[Request]] = defaultdict(list)
        self.status = 200
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests[request.path].append(Request(request.path, dict(request.headers), body))
        return web.Response(status=self.status)

    def bodies(self, path: str, source: str) -> list[bytes]:
        """Bodies POSTed to ``path`` for event source ``source`` (binary mode: its ``ce-subject``)."""
        return [r.body for r in self.requests[path] if r.headers.get("ce-subject") == source]


class RestartingSink:
    """An ``HttpSink`` on ``port`` that a test stops and starts again (a subscriber outage); what
    every incarnation received stays readable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sinks: list[HttpSink] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        sink = HttpSink(self.port)
        await sink.start()
        self.sinks.append(sink)

    async def stop(self) -> None:
        if self.sinks:
            await self.sinks[-1].stop()

    def received(self, path: str = "/") -> list[Request]:
        """Every request to ``path``, across the restarts, in order."""
        return [r for sink in self.sinks for r in sink.requests[path]]
