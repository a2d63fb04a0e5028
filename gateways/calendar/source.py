"""The calendar source: sleeps until each slot and yields one event per slot.

No duplicate fires (argo-events#202): the next slot is always computed strictly after the last one
fired, and a slot is never fired before its instant. The timezone applies to every fire
(argo-events#314). Catch-up: slots missed while the source was not running are not fired; slots
that came due while it was running but stalled (a paused process, a clock jump) are fired late, once
each, if they are at most ``CATCH_UP_WINDOW`` late; older ones are skipped with a warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta

from common.errors import SourceFailed
from common.events import SourceEvent
from common.kinds import SourceContext
from gateways.calendar import binding
from gateways.calendar.config import CalendarConfig
from gateways.calendar.schedule import ScheduleExhaustedError, describe, next_fire

CATCH_UP_WINDOW = timedelta(minutes=1)
"""How late a slot may still be fired after a stall; a minute covers GC pauses and short suspends."""

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


async def run(
    ctx: SourceContext, config: CalendarConfig, *, clock: Clock = _now
) -> AsyncGenerator[SourceEvent, None]:
    """Yield one event per slot of ``config`` until cancelled."""
    ctx.logger.info("Calendar source fires %s.", describe(config.schedule))
    last = clock()
    while True:
        slot = _next(ctx, config, last, clock())
        await _sleep_until(slot, clock)
        yield binding.to_event(ctx.name, slot, config.user_payload)
        last = slot


def _next(ctx: SourceContext, config: CalendarConfig, last: datetime, now: datetime) -> datetime:
    try:
        slot = next_fire(config.schedule, last, exdates=config.exdates, zone=config.zone)
        if slot < now - CATCH_UP_WINDOW:
            later = next_fire(
                config.schedule, now - CATCH_UP_WINDOW, exdates=config.exdates, zone=config.zone
            )
            ctx.logger.warning(
                "Fell behind: skipping the slots from %s up to %s.", slot.isoformat(), later.isoformat()
            )
            slot = later
    except ScheduleExhaustedError as exc:
        raise SourceFailed(str(exc), source=ctx.name) from exc
    return slot


async def _sleep_until(moment: datetime, clock: Clock) -> None:
    """Sleep until the wall clock reaches ``moment``; never return early (the event loop may wake early)."""
    while (delay := (moment - clock()).total_seconds()) > 0:
        await asyncio.sleep(delay)
