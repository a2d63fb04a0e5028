"""Which event loop a process runs on: Python's own (``asyncio``) or uvloop's (libuv), chosen by
``--loop`` or ``$GATEWAY_LOOP``.

``auto`` (the default) takes uvloop when it is installed (the images have it) and Python's loop
otherwise; ``uvloop`` insists on it and is a usage error where it is missing. Both loops run every
gateway kind and the client: grpc.aio, aiohttp and nats-py work on either. bench/webhook_e2e.py
measures the two side by side in one run (figures in the README's Performance section).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any

LOOPS = ("auto", "asyncio", "uvloop")
ENV = "GATEWAY_LOOP"


class LoopUnavailable(ValueError):
    """``uvloop`` was asked for and is not installed."""


def has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """``asyncio`` or ``uvloop``: what ``choice`` means on this machine."""
    if choice not in LOOPS:
        raise LoopUnavailable(f"{choice!r} is not one of {', '.join(LOOPS)} (also ${ENV})")
    if choice == "auto":
        return "uvloop" if has_uvloop() else "asyncio"
    if choice == "uvloop" and not has_uvloop():
        raise LoopUnavailable("uvloop is not installed (pip install uvloop; the images have it)")
    return choice


def _factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, None], choice: str) -> None:
    """Run ``main`` to completion on the loop ``choice`` names (already checked by :func:`resolve`)."""
    with asyncio.Runner(loop_factory=_factory(resolve(choice))) as runner:
        runner.run(main)


def running() -> str:
    """The name of the running loop's implementation, for the start-up log line."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
