"""The calendar source config: what parses, and how every kind of bad config is reported."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.errors import ConfigError
from gateways.calendar.config import parse
from gateways.calendar.schedule import CronSchedule, IntervalSchedule, RecurrenceSchedule

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
SECOND_NS = 1_000_000_000


def problems_of(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return caught.value.problems


# Valid configs


def test_an_interval_with_an_offset_parses_to_an_epoch_aligned_interval_schedule() -> None:
    config = parse("interval: 1m30s\noffset: 15s\n")

    assert config.schedule == IntervalSchedule(90 * SECOND_NS, 15 * SECOND_NS)
    assert config.zone == ZoneInfo("UTC")
    assert config.exdates == frozenset()
    assert config.user_payload is None
    assert config.dtstart_given is False


def test_an_interval_of_exactly_10ms_is_the_smallest_allowed() -> None:
    assert parse("interval: 10ms").schedule == IntervalSchedule(10_000_000)


def test_a_cron_schedule_parses_bound_to_its_timezone() -> None:
    config = parse("schedule: '0 9 * * 1-5'\ntimezone: America/New_York\n")

    assert config.schedule == CronSchedule("0 9 * * 1-5", NY)
    assert config.zone == NY


def test_an_rrule_with_a_dtstart_parses_to_a_recurrence_schedule_from_that_dtstart() -> None:
    config = parse(
        "timezone: Europe/Paris\n"
        "recurrence:\n"
        "  - DTSTART:20300101T090000\n"
        "  - RRULE:FREQ=WEEKLY;BYDAY=MO\n"
        "  - EXDATE;VALUE=DATE:20300107\n"
    )

    assert config.schedule == RecurrenceSchedule(
        ("FREQ=WEEKLY;BYDAY=MO",), (), datetime(2030, 1, 1, 9, tzinfo=PARIS), PARIS
    )
    assert config.exdates == {date(2030, 1, 7)}
    assert config.dtstart_given is True


def test_an_rrule_without_a_dtstart_starts_at_the_whole_second_it_was_parsed() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    config = parse("recurrence: ['RRULE:FREQ=HOURLY']")
    after = datetime.now(UTC)

    assert isinstance(config.schedule, RecurrenceSchedule)
    assert before <= config.schedule.dtstart <= after
    assert config.schedule.dtstart.microsecond == 0
    assert config.dtstart_given is False


def test_exdate_days_on_an_interval_are_kept_as_calendar_dates() -> None:
    config = parse("interval: 1h\nrecurrence: ['EXDATE:20190102T150405Z', 'EXDATE;VALUE=DATE:20190105']")

    assert config.exdates == {date(2019, 1, 2), date(2019, 1, 5)}


# Invalid configs: each names its field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param("userPayload: hi", "schedule", id="neither schedule nor interval"),
        pytest.param("", "schedule", id="empty document"),
        pytest.param("schedule: '61 * * * *'", "schedule", id="cron minute out of range"),
        pytest.param("schedule: 'every day'", "schedule", id="cron that is not cron"),
        pytest.param("schedule: '0 0 * * * *'", "schedule", id="6-field cron"),
        pytest.param("schedule: '@daily'", "schedule", id="cron descriptor"),
        pytest.param("schedule: '0 0 30 2 *'", "schedule", id="cron that never matches"),
        pytest.param("interval: 10", "interval", id="interval as a bare YAML number"),
        pytest.param("interval: '10'", "interval", id="interval without unit"),
        pytest.param("interval: ten", "interval", id="interval in words"),
        pytest.param("interval: 1d", "interval", id="interval in days"),
        pytest.param("interval: 9ms", "interval", id="interval under 10ms"),
        pytest.param("interval: '0'", "interval", id="zero interval"),
        pytest.param("interval: '-1s'", "interval", id="negative interval"),
        pytest.param("interval: 1s\ntimezone: Mars/Olympus_Mons", "timezone", id="unknown timezone"),
        pytest.param("interval: 1s\ntimezone: 5", "timezone", id="timezone not a string"),
        pytest.param("interval: 1s\nrecurrence: ['EXDATE:2019']", "recurrence[0]", id="bad EXDATE"),
        pytest.param(
            "interval: 1s\nrecurrence: ['EXDATE:20190102', 'EXDATE:20191302']",
            "recurrence[1]",
            id="bad EXDATE on the second line",
        ),
        pytest.param("interval: 1s\nrecurrence: EXDATE:20190102", "recurrence", id="recurrence not a list"),
        pytest.param("interval: 1s\nshedule: '* * * * *'", "shedule", id="misspelt field"),
        pytest.param("schedule: '* * * * *'\noffset: 1s", "offset", id="offset without interval"),
        pytest.param("offset: 1s", "offset", id="offset alone"),
        pytest.param("interval: 1s\noffset: 1s", "offset", id="offset equal to interval"),
        pytest.param("interval: 1s\noffset: 2s", "offset", id="offset over interval"),
        pytest.param("interval: 1m\noffset: '-1s'", "offset", id="negative offset"),
        pytest.param("interval: 1m\noffset: soon", "offset", id="offset not a duration"),
        pytest.param(
            "schedule: '0 9 * * *'\nrecurrence: ['RRULE:FREQ=DAILY']", "recurrence", id="RRULE and schedule"
        ),
        pytest.param(
            "interval: 1h\nrecurrence: ['RDATE:20300101T000000Z']", "recurrence", id="RDATE and interval"
        ),
        pytest.param("- interval: 1s", "data", id="a YAML list"),
        pytest.param("just words", "data", id="a YAML scalar"),
        pytest.param("interval: [1s", "data", id="not YAML"),
    ],
)
def test_each_invalid_config_raises_a_config_error_naming_its_field(data: str, field: str) -> None:
    problems = problems_of(data)

    assert field in problems
    assert all(message.strip() for message in problems[field])


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (
            "0 0 L * *",
            "day-of-month field 'L': 'L' (last day or weekday of the month) is not supported, as in v0.11",
        ),
        ("0 0 15W * *", "day-of-month field '15W': 'W' (nearest weekday) is not supported, as in v0.11"),
        (
            "0 0 * * 5#3",
            "day-of-week field '5#3': '#' (nth weekday of the month) is not supported, as in v0.11",
        ),
    ],
)
def test_a_cron_extension_that_v011_refused_is_invalid_and_names_the_cron_field(
    schedule: str, problem: str
) -> None:
    assert problems_of(f"schedule: '{schedule}'") == {
        "schedule": [f"invalid cron expression {schedule!r}: {problem}"]
    }


def test_an_unknown_timezone_is_invalid_and_names_the_field_and_the_zone() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("interval: 1s\ntimezone: Mars/Olympus_Mons")

    assert set(caught.value.problems) == {"timezone"}
    assert "Mars/Olympus_Mons" in str(caught.value)


def test_an_unknown_field_is_reported_alongside_the_missing_schedule() -> None:
    problems = problems_of("shedule: '* * * * *'")

    assert set(problems) == {"shedule", "schedule"}


def test_a_config_with_three_bad_fields_names_all_three_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("schedule: '99 * * * *'\ntimezone: Nowhere/Atall\ncolour: blue\n")

    assert set(caught.value.problems) == {"schedule", "timezone", "colour"}
    for field in ("schedule", "timezone", "colour"):
        assert f"{field}:" in str(caught.value)


def test_a_schedule_every_slot_of_which_is_excluded_is_invalid_and_names_recurrence() -> None:
    year = datetime.now(UTC).year
    days = ",".join(f"{year + ahead}0101" for ahead in range(12))

    problems = problems_of(f"schedule: '0 0 1 1 *'\nrecurrence: ['EXDATE;VALUE=DATE:{days}']")

    assert set(problems) == {"recurrence"}
    assert "EXDATE" in problems["recurrence"][0]


def test_the_same_schedule_with_one_new_year_left_free_is_valid() -> None:
    year = datetime.now(UTC).year
    days = ",".join(f"{year + ahead}0101" for ahead in range(12) if ahead != 5)

    config = parse(f"schedule: '0 0 1 1 *'\nrecurrence: ['EXDATE;VALUE=DATE:{days}']")

    assert date(year + 5, 1, 1) not in config.exdates
    assert len(config.exdates) == 11


def test_an_rdate_only_config_with_no_future_fire_is_invalid_and_names_recurrence() -> None:
    problems = problems_of("recurrence: ['RDATE:20000101T000000Z']")

    assert set(problems) == {"recurrence"}


def test_a_recurrence_whose_rules_have_all_fired_is_invalid() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("recurrence: ['DTSTART:20000101T000000Z', 'RRULE:FREQ=DAILY;COUNT=2']")

    assert "no fire time" in str(caught.value)


def test_a_malformed_rrule_is_reported_on_its_line_only() -> None:
    problems = problems_of("recurrence: ['RRULE:FREQ=DAILY;BYHOUR=99']")

    assert set(problems) == {"recurrence[0]"}


# Precedence, payload and zone


def test_schedule_wins_over_interval_when_both_are_given() -> None:
    config = parse("schedule: '*/5 * * * *'\ninterval: 1s\n")

    assert config.schedule == CronSchedule("*/5 * * * *", ZoneInfo("UTC"))


def test_an_empty_schedule_leaves_the_interval_in_charge() -> None:
    config = parse("schedule: ''\ninterval: 2s\n")

    assert config.schedule == IntervalSchedule(2 * SECOND_NS)


def test_a_string_user_payload_stays_a_python_string() -> None:
    assert parse("interval: 1s\nuserPayload: hello").user_payload == "hello"
    assert parse("interval: 1s\nuserPayload: '{\"a\": 1}'").user_payload == '{"a": 1}'
    assert parse("interval: 1s\nuserPayload: '123'").user_payload == "123"


def test_a_mapping_user_payload_stays_a_dict() -> None:
    config = parse("interval: 1s\nuserPayload:\n  a: 1\n  b: [x, true]\n")

    assert config.user_payload == {"a": 1, "b": ["x", True]}


def test_a_dtstart_tzid_without_timezone_makes_that_zone_the_config_zone() -> None:
    config = parse("recurrence:\n  - DTSTART;TZID=America/New_York:20300101T090000\n  - RRULE:FREQ=DAILY\n")

    assert config.zone == NY
    assert isinstance(config.schedule, RecurrenceSchedule)
    assert config.schedule.zone == NY
    assert config.schedule.dtstart == datetime(2030, 1, 1, 14, tzinfo=UTC)


def test_a_dtstart_tzid_zone_also_reads_floating_rdates() -> None:
    config = parse(
        "recurrence:\n  - DTSTART;TZID=America/New_York:20300101T090000\n  - RDATE:20300105T120000\n"
    )

    assert isinstance(config.schedule, RecurrenceSchedule)
    (rdate,) = config.schedule.rdates
    assert rdate.astimezone(UTC) - datetime(2030, 1, 5, 12, tzinfo=UTC) == timedelta(hours=5)


def test_an_explicit_timezone_wins_over_a_dtstart_tzid() -> None:
    config = parse(
        "timezone: Europe/Paris\n"
        "recurrence:\n  - DTSTART;TZID=America/New_York:20300101T090000\n  - RRULE:FREQ=DAILY\n"
    )

    assert config.zone == PARIS
