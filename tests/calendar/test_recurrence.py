"""RFC 5545 recurrence lines: EXDATE, RRULE, RDATE and DTSTART, and every way to get them wrong."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateways.calendar.recurrence import Recurrence, RecurrenceError, parse_recurrence

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def parse(*lines: str) -> Recurrence:
    return parse_recurrence(lines, NY)


def problems_of(*lines: str) -> list[str]:
    with pytest.raises(RecurrenceError) as caught:
        parse(*lines)
    return caught.value.problems


@pytest.mark.parametrize(
    "line",
    [
        "EXDATE:20190102T150405Z",
        "EXDATE;TZID=America/New_York:20190102T150405",
        "EXDATE;VALUE=DATE:20190102",
        "EXDATE:20190102T150405",
        "EXDATE:20190102",
        "exdate;value=date:20190102",
        'EXDATE;TZID="Europe/Paris":20190102T000000',
    ],
)
def test_every_exdate_form_excludes_the_day_as_written(line: str) -> None:
    assert parse(line).exdates == {date(2019, 1, 2)}


def test_a_utc_exdate_excludes_its_utc_date_even_when_the_local_date_differs() -> None:
    # 03:00Z on 3 January is still 2 January in New York; v0.11 excluded the 3rd.
    assert parse("EXDATE:20190103T030000Z").exdates == {date(2019, 1, 3)}


def test_one_exdate_line_can_list_several_days() -> None:
    recurrence = parse("EXDATE;VALUE=DATE:20190102,20190103", "EXDATE:20190105T000000Z, 20190107T120000")
    assert recurrence.exdates == {date(2019, 1, 2), date(2019, 1, 3), date(2019, 1, 5), date(2019, 1, 7)}


def test_exdates_alone_are_not_a_schedule() -> None:
    recurrence = parse("EXDATE:20190102T150405Z")
    assert not recurrence.is_schedule
    assert (recurrence.rrules, recurrence.rdates, recurrence.dtstart) == ((), (), None)


def test_blank_lines_are_ignored() -> None:
    assert parse("", "   ", "EXDATE:20190102") == parse("EXDATE:20190102")


def test_no_lines_give_an_empty_recurrence() -> None:
    assert parse() == Recurrence(exdates=frozenset(), rrules=(), rdates=(), dtstart=None)


def test_an_rrule_is_kept_as_text_and_makes_a_schedule() -> None:
    recurrence = parse("RRULE:FREQ=DAILY;INTERVAL=2", "rrule:FREQ=WEEKLY;BYDAY=MO")
    assert recurrence.rrules == ("FREQ=DAILY;INTERVAL=2", "FREQ=WEEKLY;BYDAY=MO")
    assert recurrence.is_schedule


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("RDATE:20260501T120000Z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("RDATE;TZID=Europe/Paris:20260501T120000", datetime(2026, 5, 1, 12, tzinfo=PARIS)),
        ("RDATE:20260501T120000", datetime(2026, 5, 1, 12, tzinfo=NY)),
        ("RDATE;VALUE=DATE:20260501", datetime(2026, 5, 1, tzinfo=NY)),
    ],
)
def test_an_rdate_is_an_aware_instant_read_in_its_own_zone(line: str, expected: datetime) -> None:
    (rdate,) = parse(line).rdates
    assert rdate.utcoffset() == expected.utcoffset()
    assert rdate.astimezone(UTC) == expected.astimezone(UTC)


def test_rdates_make_a_schedule() -> None:
    assert parse("RDATE:20260501T120000Z,20260502T120000Z").is_schedule


def test_dtstart_is_an_aware_instant() -> None:
    recurrence = parse("DTSTART;TZID=America/New_York:20260101T090000", "RRULE:FREQ=DAILY")
    assert recurrence.dtstart == datetime(2026, 1, 1, 9, tzinfo=NY)
    assert recurrence.dtstart is not None
    assert recurrence.dtstart.utcoffset() is not None


def test_a_bad_line_is_named_by_its_index_and_text() -> None:
    assert problems_of("EXDATE:20190102", "EXDATE:2019x") == [
        "recurrence[1]: bad EXDATE value '2019x': expected YYYYMMDD or YYYYMMDDTHHMMSS[Z]"
    ]


def test_every_bad_line_is_reported_in_one_error() -> None:
    lines = (
        "EXDATE:20190102",
        "EXDATE:2019x",
        "",
        "FOO:bar",
        "RRULE:FREQ=SOMETIMES",
        "EXDATE;TZID=Mars/Base:20190102T000000",
        "RDATE:20191302",
    )
    with pytest.raises(RecurrenceError) as caught:
        parse(*lines)
    assert [problem.partition(":")[0] for problem in caught.value.problems] == [
        "recurrence[1]",
        "recurrence[3]",
        "recurrence[4]",
        "recurrence[5]",
        "recurrence[6]",
    ]
    assert str(caught.value) == "; ".join(caught.value.problems)


def test_a_recurrence_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"recurrence\[0\]"):
        parse("NOPE:1")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("EXDATE 20190102", "expected NAME:VALUE"),
        ("FOO:bar", "unknown line 'FOO': expected EXDATE, RRULE, RDATE or DTSTART"),
        ("EXRULE:FREQ=DAILY", "EXRULE is deprecated by RFC 5545 and not supported"),
        ("EXDATE;TZID=Mars/Base:20190102T000000", "unknown TZID 'Mars/Base'"),
        ("EXDATE;TZID=America:20190102T000000", "unknown TZID 'America'"),
        ("EXDATE;VALUE=DATE:20190102T000000", "VALUE=DATE expects YYYYMMDD"),
        ("RDATE;VALUE=PERIOD:20190102T000000Z/PT1H", "VALUE=PERIOD is not supported"),
        ("EXDATE;TZID=Europe/Paris:20190102T000000Z", "a UTC value (ending in Z) takes no TZID"),
        ("EXDATE;X=1:20190102", "unknown EXDATE parameter 'X'"),
        ("EXDATE;VALUE:20190102", "bad parameter 'VALUE'"),
        ("EXDATE:20190230", "bad EXDATE value '20190230': day is out of range for month"),
        ("EXDATE:", "bad EXDATE value ''"),
        ("EXDATE:20190102,soon", "bad EXDATE value 'soon'"),
        ("RDATE:20190102T250000", "bad RDATE value '20190102T250000'"),
        ("DTSTART:20190102T000000,20190103T000000", "DTSTART takes one value, got 2"),
        ("RRULE:INTERVAL=2", "bad RRULE 'INTERVAL=2': FREQ is required"),
        ("RRULE:FREQ=SOMETIMES", "bad RRULE 'FREQ=SOMETIMES'"),
        ("RRULE:FREQ=DAILY;BYHOUR", "bad RRULE 'FREQ=DAILY;BYHOUR'"),
        ("RRULE:FREQ=DAILY;UNTIL=20261231T000000", "UNTIL values must be specified in UTC"),
        ("RRULE;X=1:FREQ=DAILY", "RRULE takes no parameters"),
    ],
)
def test_a_bad_line_says_what_is_wrong(line: str, problem: str) -> None:
    (reported,) = problems_of(line)
    assert reported.startswith("recurrence[0]: ")
    assert problem in reported


def test_a_second_dtstart_is_refused() -> None:
    assert problems_of("DTSTART:20190102T000000Z", "DTSTART:20190103T000000Z") == [
        "recurrence[1]: DTSTART given again (first at recurrence[0])"
    ]


def test_a_rule_is_checked_against_the_given_dtstart() -> None:
    recurrence = parse("DTSTART:20260101T090000Z", "RRULE:FREQ=DAILY;UNTIL=20261231T000000Z")
    assert recurrence.rrules == ("FREQ=DAILY;UNTIL=20261231T000000Z",)
