"""Paced garbage collection, so a server holding thousands of long-lived streams keeps its timing.

CPython's cyclic collector starts a pass when allocations outnumber deallocations, and its full pass
walks every live object. A server running 10,000 sources holds about a million tracked objects (the
gRPC call, generators and tasks of each stream), so a full pass stops the event loop for most of a
second. Worse, each fire leaves objects that live one interval (the awaited future, its timer, the
suspended coroutines); they are born as fast as the previous ones die, so the allocation count never
grows, no young pass runs, and the young generations fill up until one pass takes 100 ms.

The paced policy (``ServerSettings.gc``, ``paced`` by default) replaces those triggers with a clock:

- automatic collection is off; every ``young_interval`` a young pass (generations 0 and 1) walks only
  what was born since the previous one, a millisecond or so;
- once source starts have settled for ``settle`` seconds, everything alive is frozen (``gc.freeze``):
  the long-lived state of the running sources leaves every later pass;
- every ``full_interval`` a full pass walks the unfrozen heap, so cyclic garbage that outlived the
  young passes is still reclaimed;
- a source that ended may leave cycles among frozen objects, so once any source has ended a deep pass
  follows: unfreeze, collect everything, freeze again. That pass takes time in proportion to the
  running sources (0.7 s at 10,000). It runs at most once per ``full_interval``: a source that keeps
  failing and restarting gets plain settles in between, and the deep pass that follows (due even if
  nothing starts again) reclaims what all of its runs left;
- objects that were alive at a freeze and die later in a cycle are reclaimed by a deep pass every
  ``deep_interval`` (10 minutes) while anything is frozen.

The collector is process-wide (the interpreter has one): ``acquire`` starts it for the first holder
(a gateway server, a gateway client, or both in one process) and ``release`` hands collection back
to CPython when the last one stops. ``python`` leaves CPython's own policy alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from enum import Enum

from common import tasks
from common.settings import CollectorSettings

_log = logging.getLogger(__name__)


class Pass(Enum):
    """What one tick of the collector did."""

    YOUNG = "young"
    """Generations 0 and 1: what was born since the previous tick."""
    FULL = "full"
    """Every unfrozen object."""
    SETTLE = "settle"
    """A full pass, then freeze what is alive: new sources' state leaves the collector's view."""
    DEEP = "deep"
    """Unfreeze, a pass over everything, freeze again: reclaims what ended sources left."""


class PacedCollector:
    """Runs the cyclic collector on a clock; ``tick`` is one step, ``run`` ticks until cancelled."""

    def __init__(self, settings: CollectorSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._last_start: float | None = None
        """When the latest source started, while it is not frozen yet."""
        self._ended = False
        self._frozen = False
        """Whether anything is frozen (by a settle or a deep pass)."""
        self._last_deep = self._last_full = clock()
        self.passes: Counter[Pass] = Counter()
        """Passes run so far, by kind."""

    def source_started(self) -> None:
        """A source began: its long-lived state is frozen once starts settle."""
        self._last_start = self._clock()

    def source_ended(self) -> None:
        """A source ended: a deep pass follows (at most one per ``full_interval``), to reclaim what it left
        among frozen objects."""
        self._ended = True
        self._last_start = self._last_start or self._clock()

    def _due(self, now: float) -> Pass:
        since_deep = now - self._last_deep
        deep_due = (self._ended and since_deep >= self.settings.full_interval) or (
            self._frozen and since_deep >= self.settings.deep_interval
        )
        if self._last_start is not None:
            if now - self._last_start < self.settings.settle:
                return Pass.YOUNG  # starts are still coming: freeze once they settle
            return Pass.DEEP if deep_due else Pass.SETTLE
        if deep_due:
            return Pass.DEEP  # postponed after an end, or the periodic one: nothing else would bring it
        if now - self._last_full >= self.settings.full_interval:
            return Pass.FULL
        return Pass.YOUNG

    def tick(self) -> Pass:
        """Run the pass that is due now and return which it was."""
        now = self._clock()
        kind = self._due(now)
        started = time.perf_counter()
        if kind is Pass.YOUNG:
            gc.collect(1)
        elif kind is Pass.FULL:
            gc.collect(2)
        else:
            if kind is Pass.DEEP:
                gc.unfreeze()
            if kind is Pass.DEEP or not self._frozen:  # with nothing frozen, a settle is a deep pass too
                self._last_deep, self._ended = now, False
            gc.collect(2)
            gc.freeze()
            self._last_start, self._frozen = None, True
        if kind is not Pass.YOUNG:
            self._last_full = now
            level = logging.DEBUG if kind is Pass.FULL else logging.INFO
            _log.log(
                level,
                "Garbage collection: %s pass in %.0f ms; %d objects frozen.",
                kind.value,
                (time.perf_counter() - started) * 1000,
                gc.get_freeze_count(),
            )
        self.passes[kind] += 1
        return kind

    async def run(self) -> None:
        """Tick every ``young_interval`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.young_interval)
            self.tick()


_holders = 0
"""Holders (servers, clients) in this process running the paced policy; automatic collection is off
while any does."""
_was_enabled = True
"""Whether automatic collection was on before the first paced collector took over."""


def take_over() -> None:
    """Turn CPython's automatic collection off for as long as a paced collector runs.

    The paced policy owns ``gc.freeze`` while it runs: a freeze made before is undone by its deep
    passes, and everything is unfrozen when the last collector hands back.
    """
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
    _holders += 1
    gc.disable()


def hand_back() -> None:
    """The last paced collector has stopped: unfreeze, and turn automatic collection back on if it was."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        gc.unfreeze()
        if _was_enabled:
            gc.enable()


_shared: PacedCollector | None = None
_task: asyncio.Task[None] | None = None


def acquire(settings: CollectorSettings) -> PacedCollector:
    """The process's paced collector, started for the first holder (whose settings it keeps)."""
    global _shared, _task
    if _shared is None:
        _shared = PacedCollector(settings)
        _task = tasks.start(_shared.run(), name="garbage collector", eternal=True)
    take_over()
    return _shared


async def release() -> None:
    """One holder is done; the last one stops the collector and hands collection back to CPython."""
    global _shared, _task
    hand_back()
    if _holders == 0 and _task is not None:
        task, _task, _shared = _task, None, None
        await tasks.stop(task, timeout=1.0, reason="no holder left")
