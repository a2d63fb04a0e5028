"""The lifecycle module: named, guarded tasks that stop within a bound."""

from __future__ import annotations

import asyncio
import gc
import inspect

from common import tasks


async def test_a_task_stopped_before_its_first_step_leaves_no_coroutine_never_awaited() -> None:
    started = False

    async def work() -> None:
        nonlocal started
        started = True

    coro = work()
    task = tasks.start(coro, name="never ran")
    assert await tasks.stop(task, timeout=1.0)
    assert not started
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    gc.collect()  # with pytest's warnings as errors, a never-awaited coroutine would fail the test here


async def test_a_stuck_task_is_abandoned_after_the_timeout_with_false() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # refuses to stop

    task = tasks.start(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert not await tasks.stop(task, timeout=0.05)
    release.set()
    await task


async def test_stopping_a_task_already_cancelled_lets_its_cleanup_finish() -> None:
    cleaned: list[str] = []

    async def source() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # closing a connection, say
            cleaned.append("closed")

    task = tasks.start(source(), name="a source")
    await asyncio.sleep(0)
    task.cancel()  # the first stop (the stream's end)
    await asyncio.sleep(0)
    assert await tasks.stop(task, timeout=5.0)  # the second (the server's close) must not cut it short
    assert cleaned == ["closed"]
