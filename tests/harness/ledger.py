"""Ledger tests: callers that remember which ids were answered 2xx, and what arrived at the sink.

``Callers`` runs concurrent webhook callers, each POSTing events with a unique ``X-Request-Id``
(the webhook makes it the event id ``<source>:<request id>``) until told to stop, and records the
answer to each: a 2xx means the gateway took responsibility for the event. ``arrived`` reads the
ledger a ``ledger_sink`` process wrote. A test then compares the two sets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from common import tasks
from tests.harness.http_sink import RestartingSink
from tests.harness.processes import wait_until


@dataclass
class Callers:
    """``count`` callers POSTing to ``url``; ``answered`` holds the request ids answered 2xx."""

    url: str
    count: int = 8
    body: bytes = b'{"ledger": true}'
    answered: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    """Answers by status code, plus ``refused`` for a connection that failed."""
    retry_after: Counter[str] = field(default_factory=Counter)
    """``Retry-After`` values seen on 503s."""
    sent: int = 0
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """``(time.monotonic(), status)`` of every answer, ``refused`` included, in order."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Callers:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._workers = [
            tasks.start(self._call(index), name=f"ledger caller #{index}") for index in range(self.count)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop calling; a request in flight gets its answer first (a 2xx then counts)."""
        self._stop.set()
        if self._workers:
            await asyncio.wait(self._workers, timeout=70)
            for worker in self._workers:
                await tasks.stop(worker, timeout=1.0)
            self._workers = []
            await self._session.close()

    async def until_answered(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.answered) < count:
                await asyncio.sleep(0.01)  # polling the callers' tally: it sends no notification

    async def _call(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            request_id = f"c{index}-{n}"
            n += 1
            self.sent += 1
            try:
                async with self._session.post(
                    self.url, data=self.body, headers={"X-Request-Id": request_id}
                ) as response:
                    await response.read()
                    self.statuses[str(response.status)] += 1
                    self.timeline.append((time.monotonic(), str(response.status)))
                    if 200 <= response.status < 300:
                        self.answered.add(request_id)
                    elif response.status == 503:
                        self.retry_after[response.headers.get("Retry-After", "")] += 1
                        await asyncio.sleep(0.01)  # a caller backing off, as a real sender does
            except (aiohttp.ClientError, TimeoutError):
                self.statuses["refused"] += 1
                self.timeline.append((time.monotonic(), "refused"))
                await asyncio.sleep(0.01)  # a caller backing off before its next try


def arrived(ledger: Path, source: str) -> list[str]:
    """The request ids the sink received for ``source``, in order, repeats kept."""
    if not ledger.exists():
        return []
    prefix = f"{source}:"
    return [line.removeprefix(prefix) for line in ledger.read_text().splitlines() if line.startswith(prefix)]


NOTICE_RETURN = ("--retry-cap", "1")
"""Client flags for ledger runs: a subscriber's return is noticed within a second, not the default
ten. The outage is what these tests are about, not the wait after it."""


async def full_window(
    sink: RestartingSink, unacknowledged: Callable[[], int], bound: int, victim: str
) -> int:
    """Before a kill: the subscriber pauses until more than ``bound`` events are published and not
    yet delivered (the gateway keeps pace with a ledger's publisher otherwise), then comes back, so
    the ``victim`` dies while the client is still backing off, holding a full window. The backlog."""
    await sink.stop()
    await wait_until(
        lambda: unacknowledged() > bound,
        what=f"more than a window unacknowledged before the {victim}'s kill",
        timeout=60,
    )
    await sink.start()
    return unacknowledged()
