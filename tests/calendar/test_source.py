"""The running calendar source: one event per slot, on time, never early, never twice; stalls and
an exhausted schedule."""

from __future__ import annotations

import logging
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from common.errors import SourceFailed
from common.events import SourceEvent
from common.kinds import SourceContext
from common.logs import SourceLogger
from gateways.calendar.config import CalendarConfig, parse
from gateways.calendar.schedule import IntervalSchedule, RecurrenceSchedule, ScheduleExhaustedError
from gateways.calendar.source import CATCH_UP_WINDOW, run

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
INTERVAL = timedelta(milliseconds=50)
LATE_BOUND = timedelta(milliseconds=200)
TEN_SECONDS = IntervalSchedule(10_000_000_000)
SLOT = datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
"""A slot of a 10s interval, where the fake clocks below start (just before it)."""
LEAD = timedelta(milliseconds=5)
"""How long before ``SLOT`` the fake clocks start: the first event costs this much real waiting."""


def context() -> SourceContext:
    return SourceContext(name="s", id="1", logger=SourceLogger(logging.getLogger("test"), "s"))


def config_of(schedule: IntervalSchedule | RecurrenceSchedule) -> CalendarConfig:
    return CalendarConfig(schedule, UTC_ZONE, frozenset(), {"n": 1})


class ShiftedClock:
    """Real time shifted to start at ``start``; ``jump`` moves it forward at once, as a stall would.

    It advances with real time, so ``_sleep_until`` only waits the real time between readings.
    """

    def __init__(self, start: datetime) -> None:
        self.shift = start - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def jump(self, by: timedelta) -> None:
        self.shift += by


def slot_of(event: SourceEvent) -> datetime:
    assert event.time is not None
    return event.time


def micros_since_epoch(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


async def test_a_50ms_interval_source_fires_consecutive_epoch_aligned_slots_on_time() -> None:
    received: list[tuple[SourceEvent, datetime]] = []

    async with aclosing(run(context(), parse("interval: 50ms"))) as events:
        async for event in events:
            received.append((event, datetime.now(UTC)))
            if len(received) == 5:
                break

    slots = [slot_of(event) for event, _ in received]
    assert all(micros_since_epoch(slot) % 50_000 == 0 for slot in slots)
    assert [later - earlier for earlier, later in pairwise(slots)] == [INTERVAL] * 4
    ids = [event.id for event, _ in received]
    assert ids == [f"s:{slot.isoformat().replace('+00:00', 'Z')}" for slot in slots]
    assert len(set(ids)) == 5
    id_instants = [datetime.fromisoformat(event_id.removeprefix("s:")) for event_id in ids]
    assert all(earlier < later for earlier, later in pairwise(id_instants))
    for event, arrived in received:
        assert slot_of(event) <= arrived <= slot_of(event) + LATE_BOUND


async def test_a_source_does_not_fire_slots_from_before_it_started() -> None:
    started = datetime.now(UTC)

    async with aclosing(run(context(), parse("interval: 50ms"))) as events:
        first = await anext(events)

    assert started < slot_of(first) <= started + INTERVAL + LATE_BOUND


async def test_a_source_logs_what_schedule_it_fires_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="test"):
        async with aclosing(run(context(), parse("interval: 50ms"))) as events:
            await anext(events)

    (record,) = [r for r in caplog.records if r.name == "test"]
    assert record.getMessage() == "Calendar source fires every 50ms."
    assert getattr(record, "source", None) == "s"


async def test_a_stall_longer_than_the_catch_up_window_skips_to_a_recent_slot_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ShiftedClock(SLOT - LEAD)

    with caplog.at_level(logging.INFO, logger="test"):
        async with aclosing(run(context(), config_of(TEN_SECONDS), clock=clock)) as events:
            first = await anext(events)
            clock.jump(timedelta(minutes=10))
            after_stall = await anext(events)
            now = clock()

    assert slot_of(first) == SLOT
    # The first 10s slot strictly after (now - 1 min), now being 10 min (and a few ms) past SLOT.
    assert slot_of(after_stall) == SLOT + timedelta(seconds=550)
    assert now - CATCH_UP_WINDOW <= slot_of(after_stall) <= now
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith("Fell behind")
    assert (SLOT + timedelta(seconds=10)).isoformat() in warnings[0].getMessage()
    assert getattr(warnings[0], "source", None) == "s"


async def test_a_stall_within_the_catch_up_window_fires_each_missed_slot_late_once_and_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ShiftedClock(SLOT - LEAD)

    with caplog.at_level(logging.INFO, logger="test"):
        async with aclosing(run(context(), config_of(TEN_SECONDS), clock=clock)) as events:
            first = await anext(events)
            clock.jump(timedelta(seconds=30))
            late = [await anext(events) for _ in range(3)]

    assert slot_of(first) == SLOT
    assert [slot_of(event) for event in late] == [SLOT + timedelta(seconds=s) for s in (10, 20, 30)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_schedule_with_no_fire_after_the_start_fails_the_source() -> None:
    past = datetime(2029, 6, 1, tzinfo=UTC)
    config = config_of(RecurrenceSchedule((), (past,), past, UTC_ZONE))

    async with aclosing(run(context(), config, clock=lambda: SLOT)) as events:
        with pytest.raises(SourceFailed) as caught:
            await anext(events)

    assert caught.value.source == "s"
    assert "no fire time" in str(caught.value)
    assert isinstance(caught.value.__cause__, ScheduleExhaustedError)


async def test_a_schedule_that_runs_out_at_runtime_fires_its_last_slot_then_fails_the_source() -> None:
    config = config_of(RecurrenceSchedule((), (SLOT,), SLOT - timedelta(days=1), UTC_ZONE))

    async with aclosing(run(context(), config, clock=ShiftedClock(SLOT - LEAD))) as events:
        last = await anext(events)
        with pytest.raises(SourceFailed):
            await anext(events)

    assert slot_of(last) == SLOT
    assert last.payload == b'{"eventTime":"2030-01-01T00:00:10Z","userPayload":{"n":1}}'
