"""A real gRPC server of the test kind on a free loopback port, and a stub talking to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from common.rpc import eventing_pb2_grpc
from common.server.app import GatewayServer
from common.settings import ServerSettings
from tests.kinds import JOURNAL, TICK


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    JOURNAL.started.clear()
    JOURNAL.stopped.clear()
    srv = GatewayServer(TICK, ServerSettings(port=0, grace_period=2.0, stream_buffer=4))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[eventing_pb2_grpc.EventingStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield eventing_pb2_grpc.EventingStub(channel)
