"""RabbitMQ (AMQP 0-9-1) for tests: Debian's node as a plain foreground child with its own epmd.

A node boots in about 9 s whatever is done (boot-step discovery is CPU-bound), so tests that can share
one take ``shared_rabbitmq()`` (see ``brokers``); ``rabbitmq()`` gives a node of its own.

Everything the node reads or writes lives in its work dir: ``HOME`` (the Erlang cookie), the config,
env and plugin files (no ``/etc/rabbitmq``), the mnesia dir and the crash dump (its cwd). It listens on
``127.0.0.1:<port>`` with its distribution port pinned (the default, port + 20000, overflows above
45535 and the boot then fails with rc 0) and registers with a private ``epmd`` on 127.0.0.1, started
first and kept across restarts (an auto-started ``epmd -daemon`` would outlive the test run). The node
name is fixed by the port, so ``stop`` and ``start`` find the same mnesia dir: durable queues and their
persistent messages survive. ``/usr/lib/rabbitmq/bin/rabbitmq-server`` is the real script; Debian's
``/usr/sbin`` wrapper would ``su rabbitmq`` and send the output elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from tests.harness.brokers_amqp import amqp_ready
from tests.harness.brokers_base import RETRY_INTERVAL, Broker, halt, halt_now, launch
from tests.harness.brokers_wire import WireError, tcp
from tests.harness.processes import READY_TIMEOUT, free_port

SERVER_BINARY = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
MISSING = "no RabbitMQ: install Debian's rabbitmq-server (`make brokers` does, as root)"
BOOT_TIMEOUT = 60.0
"""Seconds a node may take to serve AMQP; it takes about 9 s on two cores."""


def rabbitmq_binary() -> Path | None:
    """Debian's ``rabbitmq-server`` script, when it and ``epmd`` are both installed."""
    return SERVER_BINARY if SERVER_BINARY.is_file() and shutil.which("epmd") else None


EPMD_NAMES_REQ = b"\x00\x01n"
"""epmd's ``NAMES_REQ``: it answers with its own port and the nodes registered with it."""


async def epmd_names(port: int) -> str:
    """Ask the epmd on ``127.0.0.1:port`` for its registered nodes (``name rabbit-test-1 at port 2``...)."""
    async with tcp(port) as (reader, writer):
        writer.write(EPMD_NAMES_REQ)
        await writer.drain()
        (answered_port,) = struct.unpack(">I", await reader.readexactly(4))
        if answered_port != port:
            raise WireError(f"epmd on port {port} says it is on {answered_port}")
        return (await reader.read()).decode(errors="replace")


class RabbitMQ(Broker):
    """One RabbitMQ node with its epmd; ``stop`` and ``start`` keep its port and its mnesia data."""

    name: ClassVar[str] = "rabbitmq"
    ready_timeout: ClassVar[float] = BOOT_TIMEOUT

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"rabbit-test-{self.port}@localhost"
        self.epmd_log_path = workdir / "epmd.log"
        self._epmd: subprocess.Popen[bytes] | None = None
        (workdir / "rabbitmq.conf").write_text("loopback_users = none\n")
        (workdir / "enabled_plugins").write_text("[].\n")
        (workdir / "rabbitmq-env.conf").write_text("")
        (workdir / "advanced.config").write_text("[].\n")

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>/``: the default user on the default vhost."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        """The real ``rabbitmq-server`` script; everything else is in ``environment``."""
        return [str(self.binary)]

    def environment(self) -> dict[str, str]:
        """This process's environment plus the variables that keep the node inside its work dir."""
        d = self.workdir
        return {
            **os.environ,
            "HOME": str(d),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    async def probe(self) -> None:
        """The AMQP handshake through ``Connection.OpenOk`` and ``Channel.OpenOk``, as guest on ``/``."""
        await amqp_ready(self.port)

    async def start(self) -> None:
        """Start epmd if it is not running, then the node; wait until the node serves AMQP."""
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = launch(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                self.epmd_log_path,
                cwd=self.workdir,
            )
            await self._until_epmd_answers(self._epmd)
        await super().start()

    async def _until_epmd_answers(self, epmd: subprocess.Popen[bytes]) -> None:
        started = time.monotonic()
        while True:
            if epmd.poll() is not None:
                raise RuntimeError(f"epmd exited with rc={epmd.returncode}: see {self.epmd_log_path}")
            try:
                await epmd_names(self.epmd_port)
                return
            except (OSError, EOFError, WireError):
                if time.monotonic() - started > READY_TIMEOUT:
                    raise
                await asyncio.sleep(RETRY_INTERVAL)  # a closed port sends no event to await

    async def close(self) -> None:
        """Stop the node, then its epmd."""
        await super().close()
        if self._epmd is not None:
            epmd, self._epmd = self._epmd, None
            await halt(epmd, signal.SIGTERM)

    def close_now(self) -> None:
        """``close`` without an event loop."""
        super().close_now()
        if self._epmd is not None:
            epmd, self._epmd = self._epmd, None
            halt_now(epmd, signal.SIGTERM)
