"""Stop signals: the first SIGTERM or SIGINT starts a staged stop; a second one forces the exit.

The handler only sets the stop event. A second signal logs how many events the process abandons (as
the parts holding events report them), flushes the logs and leaves with ``os._exit(1)``: raising
``SystemExit`` out of the event loop would tear the interpreter down while gRPC's threads still run,
which ends in a segmentation fault.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

_log = logging.getLogger(__name__)

EXIT_FORCED = 1

Holding = Callable[[], tuple[int, str]]
"""How many events a part of the process holds, and what they are (``(3, "written to no stream")``)."""

_holders: list[Holding] = []


def holding(report: Holding) -> Callable[[], None]:
    """Count ``report``'s events as abandoned on a forced exit; returns the function that stops it."""
    _holders.append(report)
    return lambda: _holders.remove(report) if report in _holders else None


def abandoned() -> list[tuple[int, str]]:
    """What every holder reports now."""
    return [report() for report in list(_holders)]


def force_exit(signame: str) -> None:
    """Log what is abandoned, flush the logs, leave at once."""
    parts = [f"{count} event(s) {what}" for count, what in abandoned()]
    _log.error("Second %s: forcing exit; abandoning %s.", signame, "; ".join(parts) if parts else "no events")
    logging.shutdown()
    os._exit(EXIT_FORCED)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``; a second one forces the process out at once (``force_exit``)."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            force_exit(name)
        _log.info("Received %s; stopping.", name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)
