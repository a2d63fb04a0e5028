"""Next-fire computation: cron in a zone (with its DST policy), epoch-aligned intervals, RRULE/RDATE
and EXDATE days. Everything is a pure function of the instant passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from gateways.calendar.schedule import (
    CronSchedule,
    IntervalSchedule,
    RecurrenceSchedule,
    Schedule,
    ScheduleError,
    ScheduleExhaustedError,
    describe,
    next_fire,
    parse_cron,
)

NY = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")
UTC_ZONE = ZoneInfo("UTC")
SECOND_NS = 1_000_000_000


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def fires(
    schedule: Schedule,
    after: datetime,
    count: int,
    *,
    zone: ZoneInfo = UTC_ZONE,
    exdates: frozenset[date] = frozenset(),
) -> list[datetime]:
    """``count`` successive fires, each computed from the one before."""
    found: list[datetime] = []
    for _ in range(count):
        after = next_fire(schedule, after, exdates=exdates, zone=zone)
        found.append(after)
    return found


def instants(found: list[datetime]) -> list[datetime]:
    """Fires as UTC instants: fires sharing a zone compare by wall time, which a fold makes ambiguous."""
    return [fire.astimezone(UTC) for fire in found]


def cron(expression: str, zone: ZoneInfo = NY) -> CronSchedule:
    return parse_cron(expression, zone)


def daily_rule(start: datetime, *rules: str) -> RecurrenceSchedule:
    return RecurrenceSchedule(rules or ("FREQ=DAILY",), (), start, NY)


# Cron basics


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/5 * * * *", utc(2026, 1, 1, 12, 0, 0), utc(2026, 1, 1, 12, 5)),
        ("*/5 * * * *", utc(2026, 1, 1, 12, 3, 30), utc(2026, 1, 1, 12, 5)),
        ("0 9 * * 1-5", utc(2026, 1, 2, 10), utc(2026, 1, 5, 9)),
        ("0 0 1 * *", utc(2026, 1, 15), utc(2026, 2, 1)),
        ("15 10 * jan,feb mon", utc(2026, 2, 24), utc(2027, 1, 4, 10, 15)),
    ],
)
def test_a_cron_schedule_in_utc_fires_at_the_next_matching_minute(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert next_fire(cron(expression, UTC_ZONE), after, zone=UTC_ZONE) == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 1, 1, 15), "2026-01-02T09:00:00-05:00"),
        (utc(2026, 7, 1, 15), "2026-07-02T09:00:00-04:00"),
    ],
)
def test_a_cron_schedule_matches_wall_time_in_its_zone(after: datetime, expected: str) -> None:
    assert next_fire(cron("0 9 * * *"), after, zone=NY).isoformat() == expected


def test_the_fire_is_returned_in_the_zone_given_to_next_fire() -> None:
    fire = next_fire(cron("0 12 * * *", UTC_ZONE), utc(2026, 1, 1), zone=NY)
    assert fire.isoformat() == "2026-01-01T07:00:00-05:00"


def test_the_search_start_may_be_in_any_zone() -> None:
    after = datetime(2026, 1, 1, 10, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert next_fire(cron("0 * * * *", UTC_ZONE), after, zone=UTC_ZONE) == utc(2026, 1, 1, 2)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 * * * *", "expected 5 cron fields (minute hour day-of-month month day-of-week), got 6"),
        ("0 0 0 1 * * 2030", "got 7"),
        ("0 0 *", "got 3"),
        ("", "got 0"),
        ("@daily", "got 1 (descriptors such as @daily are not supported)"),
    ],
)
def test_an_expression_without_exactly_five_fields_is_rejected(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=r"^schedule: ") as caught:
        parse_cron(expression, UTC_ZONE)
    assert problem in str(caught.value)


@pytest.mark.parametrize("expression", ["0 12 ? * *", "0 12 * * ?", "0 12 ? * ?"])
def test_a_question_mark_in_a_day_field_means_any_day(expression: str) -> None:
    after = utc(2026, 1, 1)
    assert fires(cron(expression, UTC_ZONE), after, 3) == fires(cron("0 12 * * *", UTC_ZONE), after, 3)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "out of range"),
        ("*/0 * * * *", "step '0'"),
        ("x * * * *", "is not acceptable"),
        ("? * * * *", "Question mark"),
    ],
)
def test_an_invalid_expression_is_rejected_with_the_parsers_reason(expression: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=r"^schedule: invalid cron expression ") as caught:
        parse_cron(expression, UTC_ZONE)
    assert reason in str(caught.value)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6 *"])
def test_an_expression_that_never_matches_is_rejected_when_parsed(expression: str) -> None:
    with pytest.raises(ScheduleError, match=r"never matches"):
        parse_cron(expression, UTC_ZONE)


def test_the_29th_of_february_is_a_rare_but_real_date() -> None:
    assert next_fire(cron("0 0 29 2 *", UTC_ZONE), utc(2026, 3, 1), zone=UTC_ZONE) == utc(2028, 2, 29)


# Cron across DST (America/New_York: spring forward 2026-03-08 02:00, fall back 2026-11-01 02:00)


def test_a_fixed_hour_slot_in_the_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    first, second = fires(cron("30 2 * * *"), utc(2026, 3, 7, 12), 2, zone=NY)
    assert first == utc(2026, 3, 8, 7)
    assert first.isoformat() == "2026-03-08T03:00:00-04:00"
    assert second.isoformat() == "2026-03-09T02:30:00-04:00"


def test_several_fixed_slots_in_the_spring_gap_collapse_into_one_fire() -> None:
    assert [fire.isoformat() for fire in fires(cron("0,20,40 2 * * *"), utc(2026, 3, 7, 12), 2, zone=NY)] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:00:00-04:00",
    ]


def test_a_minute_wildcard_job_in_the_spring_gap_does_not_fire_that_day() -> None:
    assert [fire.isoformat() for fire in fires(cron("*/20 2 * * *"), utc(2026, 3, 7, 12), 2, zone=NY)] == [
        "2026-03-09T02:00:00-04:00",
        "2026-03-09T02:20:00-04:00",
    ]


def test_a_minute_wildcard_job_in_the_fall_back_fold_fires_at_both_passes() -> None:
    assert instants(fires(cron("*/20 1 * * *"), utc(2026, 11, 1, 4), 7, zone=NY)) == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 5, 20),
        utc(2026, 11, 1, 5, 40),
        utc(2026, 11, 1, 6),
        utc(2026, 11, 1, 6, 20),
        utc(2026, 11, 1, 6, 40),
        utc(2026, 11, 2, 6),
    ]


def test_a_gap_slot_and_a_regular_slot_at_the_end_of_the_gap_fire_once() -> None:
    assert instants(fires(cron("0 2,3 * * *"), utc(2026, 3, 7, 12), 2, zone=NY)) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6),
    ]


def test_an_every_hour_slot_in_the_spring_gap_is_skipped() -> None:
    found = fires(cron("30 * * * *"), utc(2026, 3, 8, 5), 3, zone=NY)
    assert [fire.isoformat() for fire in found] == [
        "2026-03-08T00:30:00-05:00",
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
    ]
    assert utc(2026, 3, 8, 7) not in found


def test_an_every_hour_slot_in_the_fall_back_fold_fires_at_both_instants() -> None:
    first, second, third = fires(cron("30 * * * *"), utc(2026, 11, 1, 5), 3, zone=NY)
    assert (first.isoformat(), second.isoformat()) == (
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    )
    assert instants([first, second]) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)]
    assert third.isoformat() == "2026-11-01T02:30:00-05:00"


def test_the_two_fall_back_fires_are_distinct_utc_instants() -> None:
    first, second = fires(cron("30 * * * *"), utc(2026, 11, 1, 5), 2, zone=NY)
    assert first.replace(tzinfo=None) == second.replace(tzinfo=None)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)


def test_a_fixed_hour_slot_in_the_fall_back_fold_fires_only_at_the_first_instant() -> None:
    assert instants(fires(cron("30 1 * * *"), utc(2026, 10, 31, 12), 2, zone=NY)) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


def test_a_search_from_the_first_pass_of_the_fold_still_finds_the_second_pass() -> None:
    after = utc(2026, 11, 1, 5, 45)  # 01:45 EDT, after the first 01:30
    assert next_fire(cron("30 * * * *"), after, zone=NY).isoformat() == "2026-11-01T01:30:00-05:00"


def test_fires_in_the_fold_come_out_in_time_order() -> None:
    found = fires(cron("*/20 * * * *"), utc(2026, 11, 1, 5, 15), 6, zone=NY)
    assert [fire.strftime("%H:%M%z") for fire in found] == [
        "01:20-0400",
        "01:40-0400",
        "01:00-0500",
        "01:20-0500",
        "01:40-0500",
        "02:00-0500",
    ]
    assert instants(found) == sorted(instants(found))


def test_an_hour_field_starting_with_a_star_step_is_a_wildcard_job() -> None:
    assert instants(fires(cron("30 */1 * * *"), utc(2026, 11, 1, 5), 2, zone=NY)) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
    ]


@pytest.mark.parametrize("expression", ["30 0-23 * * *", "30 0-23/1 * * *", "30 0,1,2-23 * * *"])
def test_an_hour_field_covering_every_hour_without_a_leading_star_is_a_fixed_job(expression: str) -> None:
    assert instants(fires(cron(expression), utc(2026, 11, 1, 5), 2, zone=NY)) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 7, 30),
    ]


def test_an_every_hour_range_in_the_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    assert [
        fire.isoformat() for fire in fires(cron("30 0-23 * * *"), utc(2026, 3, 8, 6, 45), 2, zone=NY)
    ] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:30:00-04:00",
    ]


def test_a_slot_in_a_gap_at_midnight_fires_at_the_first_instant_of_the_day() -> None:
    # Santiago springs forward at midnight: 2026-09-06 starts at 01:00 -03.
    fire = next_fire(cron("30 0 * * *", SANTIAGO), utc(2026, 9, 5, 12), zone=SANTIAGO)
    assert fire.isoformat() == "2026-09-06T01:00:00-03:00"


# No duplicate fires


@pytest.mark.parametrize(
    ("schedule", "after"),
    [
        (parse_cron("30 * * * *", NY), utc(2026, 11, 1, 3)),
        (parse_cron("*/20 2 * * *", NY), utc(2026, 3, 7)),
        (parse_cron("0,20,40 2 * * *", NY), utc(2026, 3, 7)),
        (parse_cron("*/20 1 * * *", NY), utc(2026, 10, 31)),
        (parse_cron("* * * * *", NY), utc(2026, 11, 1, 5, 50)),
        (IntervalSchedule(SECOND_NS // 2), utc(2026, 1, 1)),
        (RecurrenceSchedule(("FREQ=HOURLY",), (), datetime(2026, 11, 1, tzinfo=NY), NY), utc(2026, 11, 1, 3)),
    ],
)
def test_passing_a_fire_back_in_returns_the_next_fire_never_the_same(
    schedule: Schedule, after: datetime
) -> None:
    found = instants(fires(schedule, after, 40, zone=NY))
    assert all(earlier < later for earlier, later in pairwise(found))
    assert next_fire(schedule, found[-1], zone=NY) > found[-1]


# Intervals


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        (IntervalSchedule(10 * SECOND_NS), utc(2026, 1, 1, 12, 0, 3, 500_000), utc(2026, 1, 1, 12, 0, 10)),
        (IntervalSchedule(10 * SECOND_NS), utc(2026, 1, 1, 12, 0, 10), utc(2026, 1, 1, 12, 0, 20)),
        (
            IntervalSchedule(10 * SECOND_NS, 3 * SECOND_NS),
            utc(2026, 1, 1, 12, 0, 3, 500_000),
            utc(2026, 1, 1, 12, 0, 13),
        ),
        (IntervalSchedule(SECOND_NS // 2), utc(2026, 1, 1, 12, 0, 0, 700_000), utc(2026, 1, 1, 12, 0, 1)),
        (IntervalSchedule(SECOND_NS // 2), utc(2026, 1, 1, 12, 0, 1), utc(2026, 1, 1, 12, 0, 1, 500_000)),
        # 1970-01-01 and 2026-01-01 are both Thursdays, so a weekly slot falls on the latter.
        (IntervalSchedule(7 * 24 * 3600 * SECOND_NS), utc(2025, 12, 31), utc(2026, 1, 1)),
    ],
)
def test_interval_slots_are_aligned_to_the_unix_epoch(
    schedule: IntervalSchedule, after: datetime, expected: datetime
) -> None:
    assert next_fire(schedule, after, zone=UTC_ZONE) == expected


def test_an_hourly_interval_across_the_spring_gap_fires_every_utc_hour() -> None:
    found = fires(IntervalSchedule(3600 * SECOND_NS), utc(2026, 3, 8, 4, 30), 4, zone=NY)
    assert instants(found) == [utc(2026, 3, 8, hour) for hour in (5, 6, 7, 8)]
    assert [fire.strftime("%H:%M%z") for fire in found] == [
        "00:00-0500",
        "01:00-0500",
        "03:00-0400",
        "04:00-0400",
    ]


def test_an_interval_that_is_not_positive_is_rejected() -> None:
    with pytest.raises(ScheduleError, match=r"^schedule: the interval must be positive"):
        IntervalSchedule(0)


# EXDATE


def test_an_excluded_day_skips_every_cron_fire_on_that_local_day() -> None:
    excluded = frozenset({date(2026, 1, 2)})
    fire = next_fire(cron("0 */6 * * *"), utc(2026, 1, 2, 4), exdates=excluded, zone=NY)
    assert fire.isoformat() == "2026-01-03T00:00:00-05:00"


def test_an_excluded_day_is_a_local_day_not_a_utc_day() -> None:
    schedule = cron("0 22 * * *")  # 22:00 in New York is 03:00Z the next day
    after = utc(2026, 1, 2, 12)
    assert next_fire(schedule, after, exdates=frozenset({date(2026, 1, 3)}), zone=NY) == utc(2026, 1, 3, 3)
    assert next_fire(schedule, after, exdates=frozenset({date(2026, 1, 2)}), zone=NY) == utc(2026, 1, 4, 3)


def test_an_excluded_day_skips_every_interval_slot_on_that_local_day() -> None:
    excluded = frozenset({date(2026, 1, 2)})
    after = datetime(2026, 1, 1, 23, 59, 58, tzinfo=NY)
    fires_found = fires(IntervalSchedule(SECOND_NS), after, 2, zone=NY, exdates=excluded)
    assert [fire.isoformat() for fire in fires_found] == [
        "2026-01-01T23:59:59-05:00",
        "2026-01-03T00:00:00-05:00",
    ]


def test_consecutive_excluded_days_are_all_skipped() -> None:
    excluded = frozenset(date(2026, 1, 1) + timedelta(days=offset) for offset in range(30))
    fire = next_fire(IntervalSchedule(SECOND_NS), utc(2026, 1, 1), exdates=excluded, zone=UTC_ZONE)
    assert fire == utc(2026, 1, 31)


def test_after_an_excluded_day_a_gap_slot_at_the_next_midnight_still_fires() -> None:
    excluded = frozenset({date(2026, 9, 5)})
    fire = next_fire(cron("30 0 * * *", SANTIAGO), utc(2026, 9, 5), exdates=excluded, zone=SANTIAGO)
    assert fire.isoformat() == "2026-09-06T01:00:00-03:00"


def test_a_schedule_whose_every_slot_is_excluded_is_exhausted() -> None:
    excluded = frozenset(date(2026, 1, 1) + timedelta(days=offset) for offset in range(10))
    with pytest.raises(ScheduleExhaustedError, match=r"falls on an EXDATE day") as caught:
        next_fire(
            cron("* * * * *", UTC_ZONE), utc(2026, 1, 1), exdates=excluded, zone=UTC_ZONE, horizon_days=9
        )
    assert str(caught.value).startswith(
        "schedule: no fire time within 9 days after 2026-01-01T00:00:00+00:00: "
    )


def test_a_schedule_that_does_not_match_within_the_horizon_is_exhausted() -> None:
    with pytest.raises(ScheduleExhaustedError, match=r"the schedule has no slot in that time"):
        next_fire(cron("0 0 29 2 *", UTC_ZONE), utc(2026, 3, 1), zone=UTC_ZONE, horizon_days=365)


def test_an_exhausted_schedule_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError):
        next_fire(
            IntervalSchedule(30 * 24 * 3600 * SECOND_NS), utc(2026, 1, 1), zone=UTC_ZONE, horizon_days=1
        )


def test_the_search_start_must_be_aware() -> None:
    with pytest.raises(ValueError, match=r"timezone-aware"):
        next_fire(IntervalSchedule(SECOND_NS), datetime(2026, 1, 1), zone=UTC_ZONE)


# RRULE / RDATE


def test_a_daily_rule_fires_at_its_start_time_every_day() -> None:
    schedule = daily_rule(datetime(2026, 1, 1, 9, tzinfo=NY))
    assert [fire.isoformat() for fire in fires(schedule, utc(2026, 1, 5, 12), 2, zone=NY)] == [
        "2026-01-05T09:00:00-05:00",
        "2026-01-06T09:00:00-05:00",
    ]


def test_a_daily_rule_keeps_its_wall_time_across_dst() -> None:
    schedule = daily_rule(datetime(2026, 3, 7, 9, tzinfo=NY))
    assert instants(fires(schedule, utc(2026, 3, 7), 2, zone=NY)) == [
        utc(2026, 3, 7, 14),
        utc(2026, 3, 8, 13),
    ]


def test_a_rule_does_not_fire_before_its_start() -> None:
    start = datetime(2026, 6, 1, 9, tzinfo=NY)
    assert next_fire(daily_rule(start), utc(2020, 1, 1), zone=NY) == start


def test_a_rule_start_in_another_zone_is_read_in_the_schedule_zone() -> None:
    schedule = daily_rule(utc(2026, 1, 1, 14))  # 09:00 in New York
    assert next_fire(schedule, utc(2026, 7, 1), zone=NY).isoformat() == "2026-07-01T09:00:00-04:00"


def test_rdates_fire_in_time_order_and_then_run_out() -> None:
    rdates = (utc(2026, 5, 2, 12), utc(2026, 5, 1, 12))
    schedule = RecurrenceSchedule((), rdates, utc(2026, 1, 1), NY)
    assert instants(fires(schedule, utc(2026, 1, 1), 2, zone=NY)) == [
        utc(2026, 5, 1, 12),
        utc(2026, 5, 2, 12),
    ]
    with pytest.raises(ScheduleExhaustedError, match=r"has no slot in that time"):
        next_fire(schedule, utc(2026, 5, 2, 12), zone=NY)


def test_rdates_and_rules_fire_together() -> None:
    schedule = RecurrenceSchedule(
        ("FREQ=DAILY",), (utc(2026, 1, 2, 16),), datetime(2026, 1, 1, 9, tzinfo=NY), NY
    )
    assert instants(fires(schedule, utc(2026, 1, 2), 3, zone=NY)) == [
        utc(2026, 1, 2, 14),
        utc(2026, 1, 2, 16),
        utc(2026, 1, 3, 14),
    ]


def test_an_excluded_day_skips_a_rule_occurrence() -> None:
    schedule = daily_rule(datetime(2026, 1, 1, 9, tzinfo=NY))
    fire = next_fire(schedule, utc(2026, 1, 2), exdates=frozenset({date(2026, 1, 2)}), zone=NY)
    assert fire.isoformat() == "2026-01-03T09:00:00-05:00"


def test_a_rule_with_a_count_is_exhausted_after_its_last_occurrence() -> None:
    schedule = daily_rule(datetime(2026, 1, 1, 9, tzinfo=NY), "FREQ=DAILY;COUNT=2")
    assert next_fire(schedule, utc(2026, 1, 1), zone=NY) == utc(2026, 1, 1, 14)
    with pytest.raises(ScheduleExhaustedError):
        next_fire(schedule, utc(2026, 1, 2, 14), zone=NY)


def test_a_bad_rule_is_a_schedule_error() -> None:
    schedule = daily_rule(datetime(2026, 1, 1, 9, tzinfo=NY), "FREQ=SOMETIMES")
    with pytest.raises(ScheduleError, match=r"^schedule: bad RRULE 'FREQ=SOMETIMES'"):
        next_fire(schedule, utc(2026, 1, 1), zone=NY)


def test_a_rule_start_must_be_aware() -> None:
    with pytest.raises(ScheduleError, match=r"DTSTART must be timezone-aware"):
        RecurrenceSchedule(("FREQ=DAILY",), (), datetime(2026, 1, 1), NY)


# Descriptions


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (CronSchedule("*/5 * * * *", NY), "cron '*/5 * * * *' in America/New_York"),
        (IntervalSchedule(10 * SECOND_NS), "every 10s"),
        (IntervalSchedule(SECOND_NS // 2, SECOND_NS // 10), "every 500ms offset by 100ms"),
        (
            RecurrenceSchedule(("FREQ=DAILY",), (utc(2026, 1, 2),), datetime(2026, 1, 1, 9, tzinfo=NY), NY),
            "RRULE FREQ=DAILY; 1 RDATE from 2026-01-01T09:00:00-05:00 in America/New_York",
        ),
    ],
)
def test_a_schedule_describes_itself_in_a_few_words(schedule: Schedule, text: str) -> None:
    assert describe(schedule) == text
