"""A real gateway server of the test kind for client tests, with a fresh journal of started sources."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.server.app import GatewayServer
from common.settings import ServerSettings
from tests.kinds import JOURNAL, TICK


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    JOURNAL.started.clear()
    JOURNAL.stopped.clear()
    srv = GatewayServer(TICK, ServerSettings(port=0, grace_period=1.0))
    await srv.start()
    yield srv
    await srv.stop()
