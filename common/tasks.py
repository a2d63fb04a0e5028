"""The lifecycle module: the only place long-lived tasks are created, always named and guarded.

A guarded task logs ``<name> has failed: ...`` the moment it raises, and ``<name> has finished
unexpectedly`` when a task meant to run forever returns. ``stop`` cancels a task, waits a bounded
time, and says so when it is stuck instead of hanging the shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def start(
    coro: Coroutine[Any, Any, T], *, name: str, logger: Logger = _log, eternal: bool = False
) -> asyncio.Task[T]:
    """Start ``coro`` as a task named ``name`` whose failure is logged at once."""
    task = asyncio.get_running_loop().create_task(_guard(coro, name, logger, eternal), name=name)
    # A task cancelled before its first step never runs ``coro``: close it, so it is not reported as
    # "never awaited". Closing a coroutine that has finished does nothing.
    task.add_done_callback(lambda _: coro.close())
    return task


async def _guard(coro: Coroutine[Any, Any, T], name: str, logger: Logger, eternal: bool) -> T:
    try:
        result = await coro
    except asyncio.CancelledError:
        logger.debug("%s is cancelled.", name)
        raise
    except Exception as exc:
        logger.error("%s has failed: %r", name, exc, exc_info=not _is_expected(exc))
        raise
    if eternal:
        logger.warning("%s has finished unexpectedly.", name)
    return result


def _is_expected(exc: BaseException) -> bool:
    from common.errors import GatewayError

    return isinstance(exc, GatewayError)


async def stop(task: asyncio.Task[Any], *, timeout: float, logger: Logger = _log, reason: str = "") -> bool:
    """Cancel ``task`` and wait up to ``timeout`` seconds; False (and an error log) if it is stuck."""
    if task.done():
        _consume(task)
        return True
    if not task.cancelling():  # cancelled already and cleaning up: a second cancel would cut that short
        task.cancel(reason or None)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        logger.error(
            "%s did not stop within %.1fs of being cancelled; abandoning it.", task.get_name(), timeout
        )
        return False
    _consume(task)
    return True


def _consume(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as retrieved; the guard has logged it already."""
    if not task.cancelled():
        task.exception()
