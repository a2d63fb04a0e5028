"""Gateways as real processes: ``gateway serve`` + ``gateway client`` side by side (a pod), or
``gateway run`` (standalone), each with its own log, ready once its ports answer."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.harness.processes import dump_log, free_port, spawn, terminate, wait_tcp, wait_until

GATEWAY = [sys.executable, "-m", "common.cli"]


@dataclass
class Proc:
    """One gateway process and its log."""

    name: str
    log: Path
    proc: asyncio.subprocess.Process | None = None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def exit_code(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Gateway:
    """A webhook-kind gateway run as a pod runs it (``pod=True``) or standalone (``gateway run``)."""

    tmp: Path
    config: Path
    subscribers: Sequence[str]
    pod: bool = True
    kind: str = "webhook"
    client_args: Sequence[str] = ()
    server_args: Sequence[str] = ()
    ops_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    server: Proc | None = None
    client: Proc | None = None

    @property
    def procs(self) -> list[Proc]:
        return [p for p in (self.server, self.client) if p is not None]

    async def start(self, wait_port: int | None = None) -> None:
        """Start the processes; ready once the client's ``/readyz`` answers 200 (and ``wait_port``
        accepts connections)."""
        delivery = self._delivery()
        if self.pod:
            await self.start_server()
            await self.start_client()
        else:
            self.client = Proc("standalone", self.tmp / "run.log")
            cmd = [*GATEWAY, "run", self.kind, "--event-sources", str(self.config), *delivery]
            self.client.proc = await spawn(cmd, self.client.log)
        await wait_until(self._ready, what="the client's /readyz answers 200", timeout=20)
        if wait_port is not None:
            assert self.client is not None and self.client.proc is not None
            await wait_tcp(wait_port, self.client.proc)

    def _delivery(self) -> list[str]:
        delivery = [arg for url in self.subscribers for arg in ("--subscriber", url)]
        return [*delivery, "--ops-port", str(self.ops_port), *self.client_args]

    async def start_client(self, log: str = "client.log") -> None:
        """Start ``gateway client`` (again, after a stop or a kill); ready when ``start`` waits."""
        self.client = Proc("client", self.tmp / log)
        cmd = [*GATEWAY, "client", "--server", f"127.0.0.1:{self.grpc_port}", "--kind", self.kind]
        self.client.proc = await spawn(
            [*cmd, "--event-sources", str(self.config), *self._delivery()], self.client.log
        )

    async def ready(self) -> None:
        """Until the client's ``/readyz`` answers 200."""
        await wait_until(self._ready, what="the client's /readyz answers 200", timeout=20)

    async def start_server(self, log: str = "server.log") -> None:
        """Start ``gateway serve`` on the gRPC port (again, after a stop); ready once it listens."""
        self.server = Proc("server", self.tmp / log)
        cmd = [*GATEWAY, "serve", self.kind, "--port", str(self.grpc_port), *self.server_args]
        self.server.proc = await spawn(cmd, self.server.log)
        await wait_tcp(self.grpc_port, self.server.proc)

    async def _ready(self) -> bool:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{self.ops_port}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop_pod(self) -> tuple[list[int], float]:
        """SIGTERM to server and client at once, as Kubernetes stops a pod: both exit codes, and
        ``time.monotonic()`` when the server (which holds the webhook ports) had exited."""
        assert self.server is not None and self.client is not None
        self.server.signal(signal.SIGTERM)
        self.client.signal(signal.SIGTERM)
        codes = [await self.server.exit_code()]
        exited_at = time.monotonic()
        codes.append(await self.client.exit_code())
        return codes, exited_at

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.proc is not None:
                await terminate(proc.proc, timeout=40)

    def dump(self) -> None:
        for proc in self.procs:
            dump_log(proc.log, proc.name)
