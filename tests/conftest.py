"""Suite-wide guards: no asyncio task may outlive the test that started it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.harness.http_sink import HttpSink
from tests.harness.processes import free_port


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running behind it (a source not stopped, a stream not ended)."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leftover = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
    # grpc.aio keeps internal tasks while channels and servers close; give them one loop turn.
    if leftover:
        await asyncio.wait(leftover, timeout=1.0)
    stuck = sorted(t.get_name() for t in leftover if not t.done() and not t.get_name().startswith("Task-"))
    assert not stuck, f"tasks leaked by the test: {stuck}"


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    """A real HTTP subscriber on a free loopback port, recording every POST."""
    s = HttpSink(free_port())
    await s.start()
    yield s
    await s.stop()
