"""Cron fields: Vixie cron's day-field rule and the syntax refused (v0.11's refusals, and ranges
Vixie cron reads otherwise than croniter)."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateways.calendar.schedule import ScheduleError, next_fire, parse_cron
from tests.calendar.test_schedule import UTC_ZONE, cron, fires, utc

# Cron day fields (Vixie cron: AND when either day field starts with *, otherwise OR)
#
# The OR cases and the plain-star cases were cross-checked against the npm package cron-parser
# 5.10.6, which gives the same days. cron-parser ORs a day field that starts with a star but is not
# a lone star (*/2, */1); Vixie cron (and this code) ANDs it.


def noon_days(expression: str, count: int) -> list[str]:
    return [fire.date().isoformat() for fire in fires(cron(expression, UTC_ZONE), utc(2026, 1, 1), count)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 12 */2 * 1", ["2026-01-05", "2026-01-19", "2026-02-09", "2026-02-23"]),
        ("0 12 1 * */2", ["2026-01-01", "2026-02-01", "2026-03-01", "2026-08-01"]),
        ("0 12 */1 * 1", ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]),
        ("0 12 1 * */1", ["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]),
    ],
)
def test_a_day_field_starting_with_a_star_is_anded_with_the_other(
    expression: str, expected: list[str]
) -> None:
    assert noon_days(expression, 4) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 12 1,15 * 5", ["2026-01-01", "2026-01-02", "2026-01-09", "2026-01-15", "2026-01-16"]),
        ("0 12 13 * 5", ["2026-01-02", "2026-01-09", "2026-01-13", "2026-01-16", "2026-01-23"]),
        ("0 12 1 * 0-6", ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]),
        ("0 12 1-31 * 1", ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]),
    ],
)
def test_two_day_fields_that_do_not_start_with_a_star_are_ored(expression: str, expected: list[str]) -> None:
    assert noon_days(expression, 5) == expected


@pytest.mark.parametrize("expression", ["0 12 * * 1", "0 12 ? * 1"])
def test_a_star_or_question_mark_day_of_month_leaves_the_day_of_week_alone(expression: str) -> None:
    assert noon_days(expression, 3) == ["2026-01-05", "2026-01-12", "2026-01-19"]


# Cron syntax beyond v0.11


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 L * *", "day-of-month field 'L': 'L' (last day or weekday of the month) is not supported"),
        ("0 0 15W * *", "day-of-month field '15W': 'W' (nearest weekday) is not supported"),
        ("0 0 LW * *", "day-of-month field 'LW': 'L' (last day or weekday of the month) is not supported"),
        ("0 0 1,L * *", "day-of-month field '1,L': 'L' (last day or weekday of the month) is not supported"),
        ("0 0 * * 5L", "day-of-week field '5L': 'L' (last day or weekday of the month) is not supported"),
        ("0 0 * * 5#3", "day-of-week field '5#3': '#' (nth weekday of the month) is not supported"),
        ("0 0 * * fri#3", "day-of-week field 'fri#3': '#' (nth weekday of the month) is not supported"),
        ("0 L * * *", "hour field 'L': 'L' (last day or weekday of the month) is not supported"),
        ("R 0 * * *", "minute field 'R': 'R' (random) is not supported"),
        ("H 0 * * *", "minute field 'H': 'H' (hashed) is not supported"),
    ],
)
def test_cron_extensions_that_v011_refused_are_refused_naming_the_field(
    expression: str, problem: str
) -> None:
    with pytest.raises(ScheduleError, match=r"^schedule: ") as caught:
        parse_cron(expression, UTC_ZONE)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 22-2 * * *", "hour field '22-2': the range '22-2' runs backwards"),
        ("5-1 * * * *", "minute field '5-1': the range '5-1' runs backwards"),
        ("0 0 * * 5-1", "day-of-week field '5-1': the range '5-1' runs backwards"),
        ("0 0 1/10 * *", "day-of-month field '1/10': '1/10' has a step without a range"),
        ("0 0 1,5/2 * *", "day-of-month field '1,5/2': '5/2' has a step without a range"),
    ],
)
def test_ranges_vixie_cron_reads_otherwise_are_refused_naming_the_field(
    expression: str, problem: str
) -> None:
    # Vixie cron sets nothing for a backwards range and takes only the start of a lone step, where
    # croniter wraps round and steps to the end of the field: refused rather than guessed.
    with pytest.raises(ScheduleError, match=r"^schedule: ") as caught:
        parse_cron(expression, UTC_ZONE)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    "expression", ["0 2-4 * * 1-5", "0 0 1-31/10 * *", "0 0 * jan-mar mon-fri", "*/5 0 * * *"]
)
def test_forward_ranges_and_stepped_ranges_stay_valid(expression: str) -> None:
    parse_cron(expression, UTC_ZONE)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 * jul wed", utc(2026, 1, 1), utc(2026, 7, 1)),
        ("0 0 * JUL-AUG SAT,SUN", utc(2026, 1, 1), utc(2026, 7, 4)),
        ("0 0 1 apr *", utc(2026, 1, 1), utc(2026, 4, 1)),
    ],
)
def test_month_and_day_names_holding_the_letters_l_and_w_are_still_names(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert next_fire(cron(expression, UTC_ZONE), after, zone=UTC_ZONE) == expected
