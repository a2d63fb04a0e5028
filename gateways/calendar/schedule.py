"""When a calendar source fires next: pure functions of an injected instant.

Three kinds of schedule: a 5-field cron expression read in a timezone, a fixed interval aligned to
the Unix epoch, and an RFC 5545 recurrence (RRULE/RDATE). :func:`next_fire` returns the first fire
strictly after a given instant, skipping EXDATE days, so feeding it the last fire never repeats a
fire. Every search is bounded by a horizon (``horizon_days``, ten years by default).

Cron follows Vixie cron (cron(8) on Debian) in two respects:

* Day fields: when either day field starts with ``*`` (``*``, ``*/2``; ``?`` counts as ``*``), a
  day must match both; otherwise (``1,15`` and ``5``) either.
* DST: fields are matched against local wall time in the schedule's zone, and a job is a *wildcard
  job* when its minute or its hour field starts with ``*`` (``*/20 2 * * *``, ``30 * * * *``,
  ``0 */1 * * *``), a *fixed job* otherwise (``30 2 * * *``, ``0,20,40 2 * * *``, ``30 0-23 * * *``).
  A wildcard job follows the clock: a wall time in the spring-forward gap never shows, so it does
  not fire; one in the fall-back fold shows twice, so it fires at both instants. A fixed job fires
  once: a wall time in the gap fires at the first instant after the gap (03:00 local in New York),
  several gap slots and a regular slot at that instant being one fire, and a wall time in the fold
  fires at its first instant only.

Intervals are instants (``offset + k * interval`` since the epoch) and do not see DST at all.

RRULE/RDATE follow ``dateutil.rrule``: rules iterate wall times in the schedule's zone from an
aware DTSTART, so a daily 09:00 stays at 09:00 local across DST; a wall time a rule lands on in the
spring-forward gap takes the pre-transition offset (02:30 on the New York spring-forward day fires at
07:30Z) and the fire carries that instant's real local time (03:30 EDT, never 02:30 EST); one in the
fall-back fold fires at its first occurrence. A rule whose parts can never match
(``BYMONTH=2;BYMONTHDAY=30``) makes ``dateutil`` scan up to year 9999 before giving up: finite, but
seconds for a daily or finer rule.

EXDATE days are calendar dates in the ``zone`` given to :func:`next_fire`; a fire whose local date
is excluded is skipped, and the search resumes at the start of the next local day.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter
from dateutil.rrule import rrule, rruleset, rrulestr

from common.durations import format_duration

DEFAULT_HORIZON_DAYS = 3660
"""How far :func:`next_fire` looks ahead by default: ten years and a leap day or two."""

_CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_DAY_OF_MONTH = 2
_MONTH = 3
_DAY_OF_WEEK = 4
_NAMES = {
    _MONTH: re.compile("JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"),
    _DAY_OF_WEEK: re.compile("SUN|MON|TUE|WED|THU|FRI|SAT"),
}
"""Names a field may hold: stripped before looking for extensions, as ``JUL`` holds an ``L``."""
_EXTENSIONS = {
    "L": "last day or weekday of the month",
    "W": "nearest weekday",
    "#": "nth weekday of the month",
    "R": "random",
    "H": "hashed",
}
"""Syntax croniter reads beyond the 5-field cron of v0.11, refused as v0.11 refused it."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_US = 1_000
_CRON_CHECK_START = datetime(2000, 1, 1)
"""Wall time from which :func:`parse_cron` checks that an expression matches at all."""


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message starts with ``schedule:``."""


class ScheduleExhaustedError(ScheduleError):
    """No fire time within the search horizon."""


@dataclass(frozen=True)
class CronSchedule:
    """A 5-field cron expression matched against wall time in ``zone`` (see the DST policy above)."""

    expression: str
    zone: ZoneInfo


@dataclass(frozen=True)
class IntervalSchedule:
    """Slots at ``offset_ns + k * interval_ns`` nanoseconds since the Unix epoch (UTC), for every k."""

    interval_ns: int
    offset_ns: int = 0

    def __post_init__(self) -> None:
        if self.interval_ns <= 0:
            raise ScheduleError(f"schedule: the interval must be positive, got {self.interval_ns}ns")


@dataclass(frozen=True)
class RecurrenceSchedule:
    """RRULE and RDATE fire times; the rules start at ``dtstart`` and iterate wall time in ``zone``."""

    rrules: tuple[str, ...]
    rdates: tuple[datetime, ...]
    dtstart: datetime
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if self.dtstart.utcoffset() is None:
            raise ScheduleError(f"schedule: DTSTART must be timezone-aware, got {self.dtstart.isoformat()}")


Schedule = CronSchedule | IntervalSchedule | RecurrenceSchedule


@dataclass(frozen=True)
class _CronSpec:
    """A checked cron expression: the croniter expressions it matches, and how DST treats it."""

    streams: tuple[str, ...]
    """Expressions croniter matches with the day fields ANDed; the cron matches their union. One
    when a day field starts with ``*``; else two, one per day field with the other set to ``*``."""
    wildcard: bool
    """Whether the minute or the hour field starts with ``*`` (Vixie cron's wildcard job)."""


@dataclass(frozen=True)
class _Start:
    """Where a search starts: slots after ``instant`` (UTC), or at or after it when ``inclusive``."""

    instant: datetime
    inclusive: bool

    def admits(self, slot: datetime) -> bool:
        """Whether ``slot`` lies within the search."""
        return slot >= self.instant if self.inclusive else slot > self.instant


def parse_cron(expression: str, zone: ZoneInfo) -> CronSchedule:
    """Check a 5-field cron expression (``?`` allowed in the day fields) and bind it to ``zone``.

    Raises :class:`ScheduleError` for a malformed expression and for one that never matches
    (``0 0 30 2 *``).
    """
    text = " ".join(expression.split())
    first = next(_cron_walls(_compile_cron(text), _CRON_CHECK_START), None)
    if first is None or first - _CRON_CHECK_START > timedelta(days=DEFAULT_HORIZON_DAYS):
        raise ScheduleError(f"schedule: cron expression {text!r} never matches (no such date, e.g. 30 Feb)")
    return CronSchedule(text, zone)


def next_fire(
    schedule: Schedule,
    after: datetime,
    *,
    exdates: frozenset[date] = frozenset(),
    zone: ZoneInfo,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> datetime:
    """The first fire strictly after ``after`` whose date in ``zone`` is not in ``exdates``.

    ``after`` is any aware datetime; the result is aware and in ``zone``. Compare results as
    instants (``.astimezone(UTC)``): Python compares two datetimes sharing a tzinfo by wall time,
    so the two fires of a fall-back hour compare equal, and a fire in the fold never equals a UTC
    datetime. Raises :class:`ScheduleExhaustedError` when there is no such fire within
    ``horizon_days`` of ``after``.
    """
    if after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware, got {after.isoformat()}")
    limit = after.astimezone(UTC) + timedelta(days=horizon_days)
    start = _Start(after.astimezone(UTC), inclusive=False)
    skipped = 0
    for _ in range(len(exdates) + 1):
        slot = _first_slot(schedule, start, limit)
        if slot is None:
            break
        local = slot.astimezone(zone)
        if local.date() not in exdates:
            return local
        skipped += 1
        start = _Start(_day_start(local.date() + timedelta(days=1), zone), inclusive=True)
    raise ScheduleExhaustedError(_exhausted_message(after, horizon_days, skipped))


def describe(schedule: Schedule) -> str:
    """A short human description of ``schedule``, for logs."""
    match schedule:
        case CronSchedule(expression=expression, zone=zone):
            return f"cron {expression!r} in {zone}"
        case IntervalSchedule(interval_ns=interval_ns, offset_ns=offset_ns):
            every = f"every {format_duration(interval_ns / 1e9)}"
            return f"{every} offset by {format_duration(offset_ns / 1e9)}" if offset_ns else every
        case RecurrenceSchedule(rrules=rrules, rdates=rdates, dtstart=dtstart, zone=zone):
            parts = [f"RRULE {rule}" for rule in rrules]
            if rdates:
                parts.append(f"{len(rdates)} RDATE{'s' if len(rdates) > 1 else ''}")
            return f"{'; '.join(parts)} from {dtstart.isoformat()} in {zone}"


def _exhausted_message(after: datetime, horizon_days: int, skipped: int) -> str:
    """Why there is no fire within the horizon."""
    reason = (
        "every slot in that time falls on an EXDATE day"
        if skipped
        else "the schedule has no slot in that time"
    )
    return f"schedule: no fire time within {horizon_days} days after {after.isoformat()}: {reason}"


def _first_slot(schedule: Schedule, start: _Start, limit: datetime) -> datetime | None:
    """The schedule's first slot from ``start`` up to ``limit``, ignoring EXDATE; ``None`` if none."""
    match schedule:
        case CronSchedule():
            return _first_cron_slot(schedule, start, limit)
        case IntervalSchedule():
            return _first_interval_slot(schedule, start, limit)
        case RecurrenceSchedule():
            return _first_recurrence_slot(schedule, start, limit)


# Cron


@lru_cache(maxsize=256)
def _compile_cron(expression: str) -> _CronSpec:
    """Check the expression's shape and syntax; ``?`` in the day fields becomes ``*``."""
    fields = expression.split()
    if len(fields) != 5:
        hint = " (descriptors such as @daily are not supported)" if expression.startswith("@") else ""
        names = " ".join(_CRON_FIELDS)
        raise ScheduleError(f"schedule: expected 5 cron fields ({names}), got {len(fields)}{hint}")
    problem = _extension_problem(fields) or _range_problem(fields)
    if problem:
        raise ScheduleError(f"schedule: invalid cron expression {expression!r}: {problem}")
    fields = [
        "*" if index in (_DAY_OF_MONTH, _DAY_OF_WEEK) and field == "?" else field
        for index, field in enumerate(fields)
    ]
    try:
        croniter(" ".join(fields), _CRON_CHECK_START)
    except CroniterError as exc:
        raise ScheduleError(f"schedule: invalid cron expression {expression!r}: {exc}") from None
    wildcard = fields[0].startswith("*") or fields[1].startswith("*")
    if fields[_DAY_OF_MONTH].startswith("*") or fields[_DAY_OF_WEEK].startswith("*"):
        return _CronSpec((" ".join(fields),), wildcard)
    by_month_day = [*fields[:_DAY_OF_WEEK], "*"]
    by_week_day = [*fields[:_DAY_OF_MONTH], "*", *fields[_DAY_OF_MONTH + 1 :]]
    return _CronSpec((" ".join(by_month_day), " ".join(by_week_day)), wildcard)


def _extension_problem(fields: list[str]) -> str | None:
    """Which field uses syntax beyond v0.11's cron (``L``, ``W``, ``#``, ``R``, ``H``), if any."""
    for index, field in enumerate(fields):
        names = _NAMES.get(index)
        bare = names.sub("", field.upper()) if names else field.upper()
        for mark, meaning in _EXTENSIONS.items():
            if mark in bare:
                where = f"{_CRON_FIELDS[index]} field {field!r}"
                return f"{where}: {mark!r} ({meaning}) is not supported, as in v0.11"
    return None


_NUMBER = r"[0-9]+|[A-Za-z]{3}"
_RANGE = re.compile(rf"^(?P<low>{_NUMBER})-(?P<high>{_NUMBER})(?:/[0-9]+)?$")
_LONE_STEP = re.compile(rf"^(?:{_NUMBER})/[0-9]+$")


def _range_problem(fields: list[str]) -> str | None:
    """Ranges Vixie cron reads otherwise than croniter: a reversed one (``22-2``: Vixie sets nothing,
    croniter wraps round) and a step without a range (``1/10``: Vixie takes only ``1``)."""
    for index, field in enumerate(fields):
        for part in field.split(","):
            where = f"{_CRON_FIELDS[index]} field {field!r}"
            if _LONE_STEP.match(part):
                start = part.split("/")[0]
                return f"{where}: {part!r} has a step without a range; write {start}-<last>/... or */..."
            found = _RANGE.match(part)
            if found is None or not (found["low"].isdigit() and found["high"].isdigit()):
                continue
            if int(found["low"]) > int(found["high"]):
                return f"{where}: the range {part!r} runs backwards; write it as two ranges"
    return None


def _first_cron_slot(schedule: CronSchedule, start: _Start, limit: datetime) -> datetime | None:
    """The first cron fire admitted by ``start``, up to ``limit``."""
    spec = _compile_cron(schedule.expression)
    for instant in _cron_instants(spec, schedule.zone, _first_wall(start.instant, schedule.zone)):
        if instant > limit:
            return None
        if start.admits(instant):
            return instant
    return None


def _first_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """A wall time early enough that no wall time before it fires after ``instant``.

    Wall times just before ``instant``'s own can still fire after it: the second occurrence of a
    fall-back hour, or slots in a spring-forward gap that fire at its end. Going back by the clock
    shifts around ``instant``, and a minute more, covers both.
    """
    day = timedelta(days=1)
    offset = _offset(instant, zone)
    shift = abs(offset - _offset(instant - day, zone)) + abs(_offset(instant + day, zone) - offset)
    return instant.astimezone(zone).replace(tzinfo=None) - shift - timedelta(minutes=1)


def _cron_instants(spec: _CronSpec, zone: ZoneInfo, first_wall: datetime) -> Iterator[datetime]:
    """Fire instants (UTC) of the wall times after ``first_wall``, in order and each once.

    First occurrences come out in wall-time order already; the second occurrences of a fall-back
    hour wait in a heap until a later first occurrence passes them.
    """
    return _unique(_merge_repeats(spec, zone, first_wall))


def _merge_repeats(spec: _CronSpec, zone: ZoneInfo, first_wall: datetime) -> Iterator[datetime]:
    """Fire instants in order, possibly with repeats of the same instant."""
    repeats: list[datetime] = []
    for wall in _cron_walls(spec, first_wall):
        first, second = _wall_fires(wall, zone, spec.wildcard)
        if first is None:
            continue
        while repeats and repeats[0] <= first:
            yield heapq.heappop(repeats)
        yield first
        if second is not None:
            heapq.heappush(repeats, second)
    yield from sorted(repeats)


def _cron_walls(spec: _CronSpec, first_wall: datetime) -> Iterator[datetime]:
    """Matching naive wall times after ``first_wall``, in order and each once."""
    return _unique(heapq.merge(*(_stream_walls(expression, first_wall) for expression in spec.streams)))


def _stream_walls(expression: str, first_wall: datetime) -> Iterator[datetime]:
    """Wall times after ``first_wall`` matching ``expression`` (day fields ANDed), until croniter ends."""
    walls = croniter(expression, first_wall, ret_type=datetime, day_or=False)
    while True:
        try:
            yield walls.get_next(datetime)
        except CroniterBadDateError:
            return


def _unique(moments: Iterable[datetime]) -> Iterator[datetime]:
    """Drop consecutive repeats of the same instant or wall time."""
    last: datetime | None = None
    for moment in moments:
        if moment != last:
            yield moment
        last = moment


def _wall_fires(wall: datetime, zone: ZoneInfo, wildcard: bool) -> tuple[datetime | None, datetime | None]:
    """The (first, second) fire instants, in UTC, of a matching wall time, per the DST policy.

    A wildcard job fires whenever the clock shows the wall time: never in a gap, twice in a fold. A
    fixed job fires once: at the end of a gap, at the first instant of a fold.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if not _exists(first):
        return (None, None) if wildcard else (_gap_end(wall, zone), None)
    repeated = first.utcoffset() != second.utcoffset()
    return first.astimezone(UTC), (second.astimezone(UTC) if repeated and wildcard else None)


# Wall time and instants


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    """The UTC offset of ``zone`` at ``instant``."""
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _exists(local: datetime) -> bool:
    """Whether the aware local time ``local`` survives a round trip through UTC (is not in a gap)."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) after the spring-forward gap that swallows the wall time ``wall``.

    Read with the offset after the transition (fold=1) the wall time lands before the transition,
    read with the offset before it (fold=0) it lands after; a binary search over whole seconds finds
    the transition in between (tz database transitions fall on whole seconds).
    """
    before = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = math.ceil(wall.replace(tzinfo=zone, fold=0).timestamp())
    target = _offset_at(after, zone)
    while after - before > 1:
        middle = (before + after) // 2
        if _offset_at(middle, zone) == target:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def _offset_at(seconds: int, zone: ZoneInfo) -> timedelta:
    """The UTC offset of ``zone`` at a Unix time in seconds."""
    return datetime.fromtimestamp(seconds, zone).utcoffset() or timedelta(0)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) of ``day`` in ``zone``: its midnight, or the end of a gap swallowing it."""
    midnight = datetime.combine(day, time())
    local = midnight.replace(tzinfo=zone)
    return local.astimezone(UTC) if _exists(local) else _gap_end(midnight, zone)


# Interval


def _first_interval_slot(schedule: IntervalSchedule, start: _Start, limit: datetime) -> datetime | None:
    """The first epoch-aligned interval slot admitted by ``start``, up to ``limit``."""
    since_offset = _epoch_ns(start.instant) - schedule.offset_ns
    if start.inclusive:
        slots = -(-since_offset // schedule.interval_ns)
    else:
        slots = since_offset // schedule.interval_ns + 1
    slot = _from_epoch_ns(schedule.offset_ns + slots * schedule.interval_ns)
    return slot if slot <= limit else None


def _epoch_ns(instant: datetime) -> int:
    """Nanoseconds from the Unix epoch to the aware ``instant``, exactly."""
    delta = instant - _EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * _NS_PER_US


def _from_epoch_ns(ns: int) -> datetime:
    """The UTC instant ``ns`` nanoseconds after the epoch, rounded up to whole microseconds.

    Rounding up keeps a slot strictly after the instant it was computed from.
    """
    return _EPOCH + timedelta(microseconds=-(-ns // _NS_PER_US))


# Recurrence


def _first_recurrence_slot(schedule: RecurrenceSchedule, start: _Start, limit: datetime) -> datetime | None:
    """The first RRULE/RDATE instant (UTC) admitted by ``start``, up to ``limit``.

    ``dateutil`` gives wall times in the zone; one in a gap (02:30 on a spring-forward day) reads
    with the offset before it. Converted to UTC it is the instant that names, whose local time
    (03:30) is what the fire carries.
    """
    rules = _rule_set(schedule)
    try:
        slot = rules.after(start.instant, inc=start.inclusive)
    except ValueError as exc:
        raise ScheduleError(f"schedule: {describe(schedule)}: {exc}") from None
    return slot.astimezone(UTC) if slot is not None and slot <= limit else None


@lru_cache(maxsize=64)
def _rule_set(schedule: RecurrenceSchedule) -> rruleset:
    """The schedule's rules and dates as one ``dateutil`` set, starting at DTSTART in its zone."""
    dtstart = schedule.dtstart.astimezone(schedule.zone)
    rules = rruleset()
    for text in schedule.rrules:
        rules.rrule(_rule(text, dtstart))
    for moment in schedule.rdates:
        rules.rdate(moment)
    return rules


def _rule(text: str, dtstart: datetime) -> rrule:
    """One RRULE value built with ``dateutil``."""
    try:
        built = rrulestr(text, dtstart=dtstart)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ScheduleError(f"schedule: bad RRULE {text!r}: {exc}") from None
    if not isinstance(built, rrule):
        raise ScheduleError(f"schedule: bad RRULE {text!r}: expected a single rule")
    return built
