"""The calendar event-source config (the v0.11 schema, plus ``offset``), parsed and validated.

Fields: ``schedule`` (5-field cron), ``interval`` (Go duration), ``offset`` (Go duration, shifts
interval slots), ``timezone`` (IANA name; empty means UTC), ``recurrence`` (RFC 5545 lines:
EXDATE, RRULE, RDATE, DTSTART), ``userPayload`` (any YAML value, copied into every event).
``schedule`` wins over ``interval``, as in v0.11. RRULE/RDATE are a schedule of their own and
cannot be combined with either. Every bad field is reported at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.config_yaml import check_event_size, load_fields
from common.durations import DurationError, parse_duration_ns
from common.errors import ConfigError
from gateways.calendar.binding import payload
from gateways.calendar.recurrence import Recurrence, RecurrenceError, parse_recurrence
from gateways.calendar.schedule import (
    IntervalSchedule,
    RecurrenceSchedule,
    Schedule,
    ScheduleError,
    next_fire,
    parse_cron,
)

FIELDS = ("schedule", "interval", "offset", "timezone", "recurrence", "userPayload")
MIN_INTERVAL_NS = 10_000_000
"""10 ms: below this a source would flood its subscribers faster than any of them can take."""


@dataclass(frozen=True)
class CalendarConfig:
    """A validated calendar source."""

    schedule: Schedule
    """When it fires."""
    zone: ZoneInfo
    """Where cron fields, EXDATE days and ``eventTime`` offsets are read."""
    exdates: frozenset[date]
    """Calendar days (in ``zone``) on which nothing fires."""
    user_payload: Any
    """Copied into every event's ``userPayload``: a YAML string stays a JSON string, as in v0.11."""
    dtstart_given: bool = False
    """Whether the recurrence named its DTSTART (otherwise it is the start of the source)."""


def parse(data: str) -> CalendarConfig:
    """Parse the YAML ``data`` of one calendar source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="calendar")
    zone = _zone(raw.get("timezone"), problems)
    recurrence = _recurrence(raw.get("recurrence"), zone, problems)
    dtstart_zone = _dtstart_zone(recurrence) if not raw.get("timezone") else None
    if dtstart_zone is not None:
        zone = dtstart_zone
        recurrence = _recurrence(raw.get("recurrence"), zone, problems)
    schedule = _schedule(raw, zone, recurrence, problems)
    _check_payload(raw.get("userPayload"), problems)
    if "userPayload" not in problems:  # JSON escaping can grow it: measured as an event carries it
        check_event_size(len(payload(datetime.now(UTC), raw.get("userPayload"))), "userPayload", problems)
    if problems:
        raise ConfigError(problems)
    assert schedule is not None and recurrence is not None
    config = CalendarConfig(
        schedule, zone, recurrence.exdates, raw.get("userPayload"), recurrence.dtstart is not None
    )
    _check_fires(config)
    return config


def _dtstart_zone(recurrence: Recurrence | None) -> ZoneInfo | None:
    """With no ``timezone``, a ``DTSTART;TZID=...`` names the zone the recurrence runs in."""
    tz = recurrence.dtstart.tzinfo if recurrence is not None and recurrence.dtstart is not None else None
    return tz if isinstance(tz, ZoneInfo) and tz.key != "UTC" else None


def _text(raw: dict[str, Any], key: str, problems: dict[str, str]) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems[key] = f"must be a string, got {value!r}"
        return ""
    return value.strip()


def _zone(value: Any, problems: dict[str, str]) -> ZoneInfo:
    if value is None or value == "":
        return ZoneInfo("UTC")
    if not isinstance(value, str):
        problems["timezone"] = f"must be an IANA time zone name, got {value!r}"
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        problems["timezone"] = f"unknown time zone {value!r} (use an IANA name such as America/New_York)"
        return ZoneInfo("UTC")


def _recurrence(value: Any, zone: ZoneInfo, problems: dict[str, str]) -> Recurrence | None:
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        problems["recurrence"] = "must be a list of RFC 5545 lines such as EXDATE:20190102T150405Z"
        return None
    try:
        return parse_recurrence(value, zone)
    except RecurrenceError as exc:
        for problem in exc.problems:
            field, _, message = problem.partition(": ")
            problems[field] = message
        return None


def _schedule(
    raw: dict[str, Any], zone: ZoneInfo, recurrence: Recurrence | None, problems: dict[str, str]
) -> Schedule | None:
    cron = _text(raw, "schedule", problems)
    interval = _text(raw, "interval", problems)
    offset = _text(raw, "offset", problems)
    by_rule = recurrence is not None and recurrence.is_schedule
    if by_rule and (cron or interval):
        problems["recurrence"] = (
            "RRULE/RDATE is a schedule of its own: give it, or schedule/interval, not both"
        )
        return None
    if offset and not interval:
        problems["offset"] = "only applies to interval"
    if cron:
        try:
            return parse_cron(cron, zone)
        except ScheduleError as exc:
            problems["schedule"] = str(exc).removeprefix("schedule: ")
            return None
    if interval:
        return _interval(interval, offset, problems)
    if by_rule and recurrence is not None:
        start = recurrence.dtstart or datetime.now(UTC).replace(microsecond=0).astimezone(zone)
        return RecurrenceSchedule(recurrence.rrules, recurrence.rdates, start, zone)
    if not any(key.startswith(("schedule", "interval", "recurrence")) for key in problems):
        problems["schedule"] = "must have either schedule or interval (or an RRULE/RDATE in recurrence)"
    return None


def _interval(interval: str, offset: str, problems: dict[str, str]) -> IntervalSchedule | None:
    try:
        every = parse_duration_ns(interval)
    except DurationError as exc:
        problems["interval"] = str(exc)
        return None
    if every < MIN_INTERVAL_NS:
        problems["interval"] = f"must be at least 10ms, got {interval!r}"
        return None
    shift = 0
    if offset:
        try:
            shift = parse_duration_ns(offset)
        except DurationError as exc:
            problems["offset"] = str(exc)
            return None
        if not 0 <= shift < every:
            problems["offset"] = f"must be at least 0 and less than the interval ({interval}), got {offset!r}"
            return None
    return IntervalSchedule(every, shift)


def _check_payload(value: Any, problems: dict[str, str]) -> None:
    """The payload is sent as JSON: NaN and infinities have no JSON form, so they are refused here."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        problems["userPayload"] = "holds NaN or an infinity, which JSON cannot carry"


def _check_fires(config: CalendarConfig) -> None:
    """A schedule that can never fire (every slot excluded) is invalid, not a silent dead source."""
    try:
        next_fire(config.schedule, datetime.now(UTC), exdates=config.exdates, zone=config.zone)
    except ScheduleError as exc:
        by_rule = isinstance(config.schedule, RecurrenceSchedule)
        field = "recurrence" if config.exdates or by_rule else "schedule"
        raise ConfigError({field: str(exc).removeprefix("schedule: ")}) from None
