"""The README's DST table, row by row: every fire of a whole transition day, in New York and Berlin,
spring forward and fall back, computed by the schedule code and compared with the instants expected.

Each fire is written as its local clock time and UTC offset on the transition day (``03:00-04:00``),
which names one instant; the UTC instants are also checked to be strictly increasing.

Cross-check: the cron expectations were cross-checked against the npm package ``cron-parser`` 5.10.6
(``CronExpressionParser.parse(expression, {tz})`` over the same day). It gives the same instants
where a case says so below. Where a case says it differs, ``cron-parser`` follows a DST policy of
its own, not Vixie cron's: in a skipped hour it moves every slot an hour later (02:30 to 03:30,
``*/20 2`` to 03:00, 03:20, 03:40), and in a repeated hour it matches the hour field alone (``0-23``
at both passes, ``*/20 1`` at the first pass only). There the expectations follow cron(8) as quoted
in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from gateways.calendar.binding import payload
from gateways.calendar.schedule import (
    IntervalSchedule,
    RecurrenceSchedule,
    Schedule,
    next_fire,
    parse_cron,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
HOUR_NS = 3600 * 1_000_000_000


@dataclass(frozen=True)
class Transition:
    """A DST transition day and the local hour it skips or repeats."""

    name: str
    zone: ZoneInfo
    day: date
    hour: int


NY_SPRING = Transition("New York spring forward", NY, date(2026, 3, 8), 2)
"""02:00 EST becomes 03:00 EDT (07:00Z): 02:00-02:59 does not exist."""
NY_FALL = Transition("New York fall back", NY, date(2026, 11, 1), 1)
"""02:00 EDT becomes 01:00 EST (06:00Z): 01:00-01:59 happens twice."""
BERLIN_SPRING = Transition("Berlin spring forward", BERLIN, date(2026, 3, 29), 2)
"""02:00 CET becomes 03:00 CEST (01:00Z): 02:00-02:59 does not exist."""
BERLIN_FALL = Transition("Berlin fall back", BERLIN, date(2026, 10, 25), 2)
"""03:00 CEST becomes 02:00 CET (01:00Z): 02:00-02:59 happens twice."""


def case_id(value: object) -> str | None:
    """Test ids: the transition's name and the number of fires expected."""
    if isinstance(value, Transition):
        return value.name
    if isinstance(value, list):
        return f"{len(value)} fires"
    return None


def clocks(text: str) -> list[str]:
    """Expected fires written as whitespace-separated ``HH:MM±hh:mm``."""
    return text.split()


def day_fires(schedule: Schedule, transition: Transition) -> list[str]:
    """Every fire from local midnight of the transition day to the next, as ``HH:MM±hh:mm``."""
    zone = transition.zone
    start = datetime.combine(transition.day, time(), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(transition.day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    found: list[datetime] = []
    after = start - timedelta(microseconds=1)
    while (fire := next_fire(schedule, after, zone=zone)).astimezone(UTC) < end:
        found.append(fire)
        after = fire
    assert all(a.astimezone(UTC) < b.astimezone(UTC) for a, b in pairwise(found))
    assert all(fire.date() == transition.day for fire in found)
    return [fire.isoformat(timespec="minutes")[11:] for fire in found]


NY_SPRING_HOURLY = clocks(
    """
    00:30-05:00 01:30-05:00 03:30-04:00 04:30-04:00 05:30-04:00 06:30-04:00 07:30-04:00 08:30-04:00
    09:30-04:00 10:30-04:00 11:30-04:00 12:30-04:00 13:30-04:00 14:30-04:00 15:30-04:00 16:30-04:00
    17:30-04:00 18:30-04:00 19:30-04:00 20:30-04:00 21:30-04:00 22:30-04:00 23:30-04:00
    """
)
NY_FALL_HOURLY = clocks(
    """
    00:30-04:00 01:30-04:00 01:30-05:00 02:30-05:00 03:30-05:00 04:30-05:00 05:30-05:00 06:30-05:00
    07:30-05:00 08:30-05:00 09:30-05:00 10:30-05:00 11:30-05:00 12:30-05:00 13:30-05:00 14:30-05:00
    15:30-05:00 16:30-05:00 17:30-05:00 18:30-05:00 19:30-05:00 20:30-05:00 21:30-05:00 22:30-05:00
    23:30-05:00
    """
)
BERLIN_SPRING_HOURLY = clocks(
    """
    00:30+01:00 01:30+01:00 03:30+02:00 04:30+02:00 05:30+02:00 06:30+02:00 07:30+02:00 08:30+02:00
    09:30+02:00 10:30+02:00 11:30+02:00 12:30+02:00 13:30+02:00 14:30+02:00 15:30+02:00 16:30+02:00
    17:30+02:00 18:30+02:00 19:30+02:00 20:30+02:00 21:30+02:00 22:30+02:00 23:30+02:00
    """
)
BERLIN_FALL_HOURLY = clocks(
    """
    00:30+02:00 01:30+02:00 02:30+02:00 02:30+01:00 03:30+01:00 04:30+01:00 05:30+01:00 06:30+01:00
    07:30+01:00 08:30+01:00 09:30+01:00 10:30+01:00 11:30+01:00 12:30+01:00 13:30+01:00 14:30+01:00
    15:30+01:00 16:30+01:00 17:30+01:00 18:30+01:00 19:30+01:00 20:30+01:00 21:30+01:00 22:30+01:00
    23:30+01:00
    """
)


# Row: cron wildcard job (minute or hour field starts with *): wall-clock time, as the clock shows it


@pytest.mark.parametrize(
    ("expression", "transition", "expected"),
    [
        # cron-parser differs (03:00, 03:20, 03:40).
        ("*/20 2 * * *", NY_SPRING, []),
        ("*/20 2 * * *", BERLIN_SPRING, []),
        # cron-parser differs (first pass only).
        (
            "*/20 1 * * *",
            NY_FALL,
            clocks("01:00-04:00 01:20-04:00 01:40-04:00 01:00-05:00 01:20-05:00 01:40-05:00"),
        ),
        (
            "*/20 2 * * *",
            BERLIN_FALL,
            clocks("02:00+02:00 02:20+02:00 02:40+02:00 02:00+01:00 02:20+01:00 02:40+01:00"),
        ),
        # cron-parser: same.
        ("30 * * * *", NY_SPRING, NY_SPRING_HOURLY),
        ("30 * * * *", NY_FALL, NY_FALL_HOURLY),
        ("30 * * * *", BERLIN_SPRING, BERLIN_SPRING_HOURLY),
        ("30 * * * *", BERLIN_FALL, BERLIN_FALL_HOURLY),
        ("30 */1 * * *", NY_SPRING, NY_SPRING_HOURLY),
        ("30 */1 * * *", NY_FALL, NY_FALL_HOURLY),
        ("30 */1 * * *", BERLIN_SPRING, BERLIN_SPRING_HOURLY),
        ("30 */1 * * *", BERLIN_FALL, BERLIN_FALL_HOURLY),
    ],
    ids=case_id,
)
def test_a_wildcard_job_fires_nothing_in_a_skipped_hour_and_at_both_passes_of_a_repeated_hour(
    expression: str, transition: Transition, expected: list[str]
) -> None:
    assert day_fires(parse_cron(expression, transition.zone), transition) == expected


# Row: cron fixed job (neither field starts with *): once after a skipped hour, once in a repeated hour


@pytest.mark.parametrize(
    ("expression", "transition", "expected"),
    [
        # cron-parser differs (03:30).
        ("30 2 * * *", NY_SPRING, clocks("03:00-04:00")),
        ("30 2 * * *", BERLIN_SPRING, clocks("03:00+02:00")),
        # cron-parser: same.
        ("30 1 * * *", NY_FALL, clocks("01:30-04:00")),
        ("30 2 * * *", BERLIN_FALL, clocks("02:30+02:00")),
        # cron-parser differs (03:00, 03:20, 03:40).
        ("0,20,40 2 * * *", NY_SPRING, clocks("03:00-04:00")),
        ("0,20,40 2 * * *", BERLIN_SPRING, clocks("03:00+02:00")),
        # cron-parser: same.
        ("0,20,40 1 * * *", NY_FALL, clocks("01:00-04:00 01:20-04:00 01:40-04:00")),
        ("0,20,40 2 * * *", BERLIN_FALL, clocks("02:00+02:00 02:20+02:00 02:40+02:00")),
        ("0 2,3 * * *", NY_SPRING, clocks("03:00-04:00")),
        ("0 2,3 * * *", BERLIN_SPRING, clocks("03:00+02:00")),
        ("0 1,2 * * *", NY_FALL, clocks("01:00-04:00 02:00-05:00")),
        ("0 2,3 * * *", BERLIN_FALL, clocks("02:00+02:00 03:00+01:00")),
    ],
    ids=case_id,
)
def test_a_fixed_job_fires_once_after_a_skipped_hour_and_once_in_a_repeated_hour(
    expression: str, transition: Transition, expected: list[str]
) -> None:
    assert day_fires(parse_cron(expression, transition.zone), transition) == expected


@pytest.mark.parametrize(
    ("transition", "expected"),
    [
        (
            NY_SPRING,
            clocks(
                """
                00:30-05:00 01:30-05:00 03:00-04:00 03:30-04:00 04:30-04:00 05:30-04:00 06:30-04:00
                07:30-04:00 08:30-04:00 09:30-04:00 10:30-04:00 11:30-04:00 12:30-04:00 13:30-04:00
                14:30-04:00 15:30-04:00 16:30-04:00 17:30-04:00 18:30-04:00 19:30-04:00 20:30-04:00
                21:30-04:00 22:30-04:00 23:30-04:00
                """
            ),
        ),
        (
            NY_FALL,
            clocks(
                """
                00:30-04:00 01:30-04:00 02:30-05:00 03:30-05:00 04:30-05:00 05:30-05:00 06:30-05:00
                07:30-05:00 08:30-05:00 09:30-05:00 10:30-05:00 11:30-05:00 12:30-05:00 13:30-05:00
                14:30-05:00 15:30-05:00 16:30-05:00 17:30-05:00 18:30-05:00 19:30-05:00 20:30-05:00
                21:30-05:00 22:30-05:00 23:30-05:00
                """
            ),
        ),
        (
            BERLIN_SPRING,
            clocks(
                """
                00:30+01:00 01:30+01:00 03:00+02:00 03:30+02:00 04:30+02:00 05:30+02:00 06:30+02:00
                07:30+02:00 08:30+02:00 09:30+02:00 10:30+02:00 11:30+02:00 12:30+02:00 13:30+02:00
                14:30+02:00 15:30+02:00 16:30+02:00 17:30+02:00 18:30+02:00 19:30+02:00 20:30+02:00
                21:30+02:00 22:30+02:00 23:30+02:00
                """
            ),
        ),
        (
            BERLIN_FALL,
            clocks(
                """
                00:30+02:00 01:30+02:00 02:30+02:00 03:30+01:00 04:30+01:00 05:30+01:00 06:30+01:00
                07:30+01:00 08:30+01:00 09:30+01:00 10:30+01:00 11:30+01:00 12:30+01:00 13:30+01:00
                14:30+01:00 15:30+01:00 16:30+01:00 17:30+01:00 18:30+01:00 19:30+01:00 20:30+01:00
                21:30+01:00 22:30+01:00 23:30+01:00
                """
            ),
        ),
    ],
    ids=case_id,
)
def test_an_hour_range_covering_the_whole_day_is_still_a_fixed_job(
    transition: Transition, expected: list[str]
) -> None:
    # cron-parser differs on all four days (it skips 02:30 in spring and fires both passes in fall).
    assert day_fires(parse_cron("30 0-23 * * *", transition.zone), transition) == expected


# Row: interval (instants since the epoch): DST is not seen


@pytest.mark.parametrize(
    ("transition", "expected"),
    [
        (NY_SPRING, NY_SPRING_HOURLY),
        (NY_FALL, NY_FALL_HOURLY),
        (BERLIN_SPRING, BERLIN_SPRING_HOURLY),
        (BERLIN_FALL, BERLIN_FALL_HOURLY),
    ],
    ids=case_id,
)
def test_an_interval_fires_every_real_hour_through_a_transition(
    transition: Transition, expected: list[str]
) -> None:
    schedule = IntervalSchedule(HOUR_NS, HOUR_NS // 2)

    assert day_fires(schedule, transition) == expected


# Row: RRULE/RDATE (wall times of the rule): a gap time is read with the offset before the transition,
# and the fire carries the local time of its real instant; a repeated time fires at its first pass


def half_hours_from_one_to_three(zone: ZoneInfo) -> RecurrenceSchedule:
    start = datetime(2026, 1, 1, tzinfo=zone)
    return RecurrenceSchedule(("FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30",), (), start, zone)


@pytest.mark.parametrize(
    ("transition", "expected"),
    [
        # 02:00 and 02:30 EST are 03:00 and 03:30 EDT, the instants of the rule's own 03:00 and 03:30.
        (NY_SPRING, clocks("01:00-05:00 01:30-05:00 03:00-04:00 03:30-04:00")),
        (NY_FALL, clocks("01:00-04:00 01:30-04:00 02:00-05:00 02:30-05:00 03:00-05:00 03:30-05:00")),
        (BERLIN_SPRING, clocks("01:00+01:00 01:30+01:00 03:00+02:00 03:30+02:00")),
        (BERLIN_FALL, clocks("01:00+02:00 01:30+02:00 02:00+02:00 02:30+02:00 03:00+01:00 03:30+01:00")),
    ],
    ids=case_id,
)
def test_a_rule_fires_gap_times_at_their_real_local_time_and_repeated_times_once(
    transition: Transition, expected: list[str]
) -> None:
    assert day_fires(half_hours_from_one_to_three(transition.zone), transition) == expected


def gap_slot_rule(zone: ZoneInfo) -> RecurrenceSchedule:
    return RecurrenceSchedule(
        ("FREQ=DAILY;BYHOUR=2;BYMINUTE=30",), (), datetime(2026, 1, 1, tzinfo=zone), zone
    )


def gap_slot_date_in_new_york() -> RecurrenceSchedule:
    rdate = datetime(2026, 3, 8, 2, 30, tzinfo=NY)
    return RecurrenceSchedule((), (rdate,), datetime(2026, 1, 1, tzinfo=NY), NY)


@pytest.mark.parametrize(
    ("schedule", "transition", "event_time"),
    [
        (gap_slot_rule(NY), NY_SPRING, "2026-03-08T03:30:00-04:00"),
        (gap_slot_date_in_new_york(), NY_SPRING, "2026-03-08T03:30:00-04:00"),
        (gap_slot_rule(BERLIN), BERLIN_SPRING, "2026-03-29T03:30:00+02:00"),
    ],
    ids=["RRULE in New York", "RDATE in New York", "RRULE in Berlin"],
)
def test_the_payload_of_a_gap_slot_carries_the_local_time_of_its_instant(
    schedule: RecurrenceSchedule, transition: Transition, event_time: str
) -> None:
    slot = next_fire(
        schedule, datetime.combine(transition.day, time(), tzinfo=transition.zone), zone=schedule.zone
    )

    assert payload(slot, None) == f'{{"eventTime":"{event_time}","userPayload":null}}'.encode()
    assert slot.astimezone(UTC) == datetime.fromisoformat(event_time).astimezone(UTC)
