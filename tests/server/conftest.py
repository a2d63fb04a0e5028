"""A real gRPC server of the test kind on a free loopback port, and a stub talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from common.rpc import eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings
from tests.kinds import JOURNAL, TICK

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    JOURNAL.started.clear()
    JOURNAL.stopped.clear()
    srv = GatewayServer(TICK, ServerSettings(port=0, grace_period=2.0, stream_buffer=4))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[EventingAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield eventing_stub(channel)
