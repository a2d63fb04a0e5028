"""A real nats-server (JetStream on, monitoring on) and a NATS gateway server in-process, over real gRPC.

Each test gets a broker of its own (``broker``), restartable on its port, whose monitoring port tells
when a source has subscribed (``Broker.subscribed``: nothing published before that reaches a core
subscription). ``stub`` talks to a ``GatewayServer`` of the nats kind on a free loopback port;
streams are opened by hand (``tests.server.test_control_channel.Reader``), as a client would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import nats
import pytest
from nats.aio.client import Client

from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from gateways.nats import KIND
from tests.harness.brokers_base import require, running
from tests.harness.nats import MISSING, NatsServer, nats_server_binary
from tests.harness.processes import free_port, wait_until
from tests.server.test_control_channel import Reader

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

SETPRIV = shutil.which("setpriv")
PDEATHSIG = [SETPRIV, "--pdeathsig", "TERM", "--"] if SETPRIV else []
"""A prefix that makes the broker die with the test run (util-linux ``setpriv``), where there is one."""
FAST_RETRY = "backoff: {duration: 100ms, factor: 2, jitter: 0, steps: 0}"
"""A source config line that retries its first connect quickly (tests wait for it, never sleep)."""


def launch_from_c(cmd: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, its output appended to ``log_path``, with no ``preexec_fn``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )


class Broker(NatsServer):
    """nats-server with its monitoring port on, and any extra flags a test needs (auth, TLS)."""

    def __init__(self, binary: Path, workdir: Path, extra: Sequence[str] = ()) -> None:
        super().__init__(binary, workdir, jetstream=True)
        self.monitor_port = free_port()
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [*super().command(), "-m", str(self.monitor_port), *self.extra]

    async def start(self) -> None:
        """As ``NatsServer.start``, but the child runs no Python between fork and exec.

        The harness's ``launch`` sets the parent-death signal in a ``preexec_fn``; forked while this
        process's gRPC threads are busy (a restart mid-stream, with the gateway server in-process),
        that child can crash before it execs (SIGSEGV, rc=-11). ``setpriv --pdeathsig`` sets the same
        signal from C, after the exec.
        """
        if self.running:
            return
        started = time.monotonic()
        self._proc = launch_from_c([*PDEATHSIG, *self.command()], self.log_path, self.workdir)
        self.ready_seconds = await self._until_ready(self._proc, started)

    async def probe(self) -> None:
        """The harness's NATS probe logs in without credentials; a broker that demands them is
        asked its monitoring port's ``/healthz`` instead (it answers ok once it serves clients)."""
        if not self.extra:
            await super().probe()
            return
        try:
            health = await self._get("/healthz")
        except aiohttp.ClientError as exc:
            raise OSError(f"the monitoring port does not answer yet: {exc!r}") from exc
        if health.get("status") != "ok":
            raise ValueError(f"nats-server is not healthy yet: {health}")

    async def _get(self, path: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=2)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"http://127.0.0.1:{self.monitor_port}{path}") as answer,
        ):
            found: dict[str, Any] = json.loads(await answer.read())
            return found

    async def subscriptions(self, connection_name: str) -> list[str]:
        """The subjects the connection named ``connection_name`` subscribes to now (``/connz``)."""
        connz = await self._get("/connz?subs=1")
        return [
            subject
            for connection in connz.get("connections") or []
            if connection.get("name") == connection_name
            for subject in connection.get("subscriptions_list") or []
        ]

    async def subscribed(self, source: str, subject: str, timeout: float = 10.0) -> None:
        """Wait until event source ``source`` subscribes to ``subject`` on this broker."""
        name = f"gateways nats source {source}"

        async def subscribed() -> bool:
            return self.running and subject in await self.subscriptions(name)

        await wait_until(
            subscribed,
            what=f"{source} subscribed to {subject}",
            timeout=timeout,
        )


def broker_with(*extra: str) -> AbstractAsyncContextManager[Broker]:
    """A running ``Broker`` with ``extra`` flags."""
    binary = require(nats_server_binary(), MISSING)
    return running(lambda workdir: Broker(binary, workdir, extra))


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with broker_with() as server:
        yield server


@pytest.fixture
async def publisher(broker: Broker) -> AsyncIterator[Client]:
    """A plain nats-py client of the test's own on the broker (it reconnects across outages)."""

    async def quiet(_: Exception) -> None:
        """Outages are the tests' own doing: nats-py's default would log each as an error."""

    client = await nats.connect(
        broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, error_cb=quiet
    )
    yield client
    await client.close()


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    srv = GatewayServer(KIND, ServerSettings(port=0, grace_period=2.0))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[EventingAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield eventing_stub(channel)


def source_yaml(url: str, subject: str, *lines: str) -> str:
    """One NATS source's config: ``url``, ``subject``, a quick first-connect retry, then ``lines``."""
    return "\n".join([f"url: {url}", f"subject: {subject}", FAST_RETRY, *lines])


def spec(name: str, data: str) -> eventing_pb2.EventSource:
    return eventing_pb2.EventSource(id="1", name=name, data=data, version="v0.10")


def start(
    name: str, data: str, *, acknowledges: bool = False, state: bool = False, window: int = 0
) -> eventing_pb2.StreamControl:
    """The first message of a control-channel stream for source ``name``."""
    return eventing_pb2.StreamControl(
        start=eventing_pb2.StreamStart(
            source=spec(name, data), acknowledges=acknowledges, source_state=state, max_unacked_events=window
        )
    )


def ack(*sequences: int) -> eventing_pb2.StreamControl:
    return eventing_pb2.StreamControl(ack=eventing_pb2.Acknowledge(sequences=sequences))


def drain() -> eventing_pb2.StreamControl:
    return eventing_pb2.StreamControl(drain=eventing_pb2.Drain(reason=eventing_pb2.STOP_REASON_REMOVED))


async def open_stream(stub: EventingAsyncStub, control: eventing_pb2.StreamControl) -> tuple[Any, Reader]:
    """A control-channel stream started with ``control``."""
    call = stub.StreamEventSource()
    await call.write(control)
    return call, Reader(call)
