"""RFC 5545 recurrence lines, as a calendar source's ``recurrence`` list writes them.

Accepted lines (names and parameter names are case-insensitive; blank lines are ignored):

* ``EXDATE`` - calendar days on which the source does not fire. Every value form names a day *as
  written*: ``EXDATE:20190102T150405Z`` excludes 2 January 2019 (its UTC date, as Argo Events v0.11
  read it), ``EXDATE;TZID=America/New_York:20190102T150405``, ``EXDATE;VALUE=DATE:20190102`` and the
  floating ``EXDATE:20190102T150405`` exclude the same day. Several values may share a line, separated
  by commas. The day is matched against each fire's date in the source's timezone.
* ``RRULE`` - a recurrence rule, kept as text for ``dateutil.rrule`` (and checked with it here).
* ``RDATE`` - extra fire instants: a ``Z`` value is UTC, a ``TZID`` value is in that zone, a floating
  value is in the source's zone and a ``DATE`` value is midnight in the source's zone.
* ``DTSTART`` - the start of the rules, in the same forms as ``RDATE``; at most one.

``EXRULE`` (deprecated by RFC 5545) is refused with a pointer to ``EXDATE``; any other line is an
error. Every bad line is reported, not just the first, in one :class:`RecurrenceError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?")
_STAMP_FORMS = "expected YYYYMMDD or YYYYMMDDTHHMMSS[Z]"
_NAMES = "EXDATE, RRULE, RDATE or DTSTART"
_RULE_CHECK_START = datetime(2000, 1, 1)
"""Wall time used as the rules' start when checking them and no DTSTART line is given."""


class RecurrenceError(ValueError):
    """Bad recurrence lines; ``problems`` holds one ``recurrence[i]: ...`` message per bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _LineError(ValueError):
    """What is wrong with one line (the caller adds the ``recurrence[i]`` prefix)."""


@dataclass(frozen=True)
class Recurrence:
    """The parsed ``recurrence`` list of one calendar source."""

    exdates: frozenset[date]
    """Calendar days excluded, matched against each fire's date in the source timezone."""
    rrules: tuple[str, ...]
    """RRULE values (the text after ``RRULE:``), for ``dateutil.rrule.rrulestr``."""
    rdates: tuple[datetime, ...]
    """Extra fire instants, timezone-aware."""
    dtstart: datetime | None
    """The DTSTART line's instant (aware), or ``None`` when there is none."""

    @property
    def is_schedule(self) -> bool:
        """Whether the lines define fire times of their own (an RRULE or an RDATE)."""
        return bool(self.rrules or self.rdates)


@dataclass(frozen=True)
class _Line:
    """One non-blank line split into its name, parameters and value."""

    index: int
    name: str
    params: dict[str, str]
    value: str


@dataclass(frozen=True)
class _Stamp:
    """One EXDATE/RDATE/DTSTART value as written: its day and, for a date-time, its time and zone."""

    day: date
    clock: time | None
    """Time of day, or ``None`` for a DATE value."""
    zone: tzinfo | None
    """UTC for a ``Z`` value, the TZID zone, or ``None`` for floating and DATE values."""

    def instant(self, default_zone: ZoneInfo) -> datetime:
        """The aware instant; floating and DATE values are read in ``default_zone``."""
        return datetime.combine(self.day, self.clock or time(), tzinfo=self.zone or default_zone)


@dataclass
class _Collected:
    """What the lines parsed so far contribute."""

    exdates: set[date]
    rrules: list[tuple[int, str]]
    rdates: list[datetime]
    dtstart: tuple[int, datetime] | None = None


def parse_recurrence(lines: Sequence[str], zone: ZoneInfo) -> Recurrence:
    """Parse RFC 5545 recurrence lines; ``zone`` reads floating and DATE values.

    Raises :class:`RecurrenceError` listing every bad line.
    """
    collected = _Collected(exdates=set(), rrules=[], rdates=[])
    problems: dict[int, str] = {}
    for index, text in enumerate(lines):
        if not text.strip():
            continue
        try:
            _collect(_split(index, text.strip()), zone, collected)
        except _LineError as exc:
            problems[index] = str(exc)
    dtstart = collected.dtstart[1] if collected.dtstart else None
    for index, rule in collected.rrules:
        problem = _rule_problem(rule, dtstart or _RULE_CHECK_START.replace(tzinfo=zone))
        if problem:
            problems[index] = problem
    if problems:
        raise RecurrenceError([f"recurrence[{index}]: {problems[index]}" for index in sorted(problems)])
    return Recurrence(
        exdates=frozenset(collected.exdates),
        rrules=tuple(rule for _, rule in collected.rrules),
        rdates=tuple(collected.rdates),
        dtstart=dtstart,
    )


def _split(index: int, text: str) -> _Line:
    """Split ``NAME;PARAM=VALUE:VALUE`` into its parts."""
    head, colon, value = text.partition(":")
    if not colon:
        raise _LineError(f"expected NAME:VALUE (e.g. EXDATE:20190102T150405Z), got {text!r}")
    name, *raw_params = head.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, equals, param_value = raw.partition("=")
        if not equals or not key.strip():
            raise _LineError(f"bad parameter {raw!r} in {text!r}: expected NAME=VALUE")
        params[key.strip().upper()] = param_value.strip().strip('"')
    return _Line(index, name.strip().upper(), params, value.strip())


def _collect(line: _Line, zone: ZoneInfo, collected: _Collected) -> None:
    """Add one line's contribution to ``collected``."""
    if line.name == "EXDATE":
        collected.exdates.update(stamp.day for stamp in _stamps(line))
    elif line.name == "RDATE":
        collected.rdates.extend(stamp.instant(zone) for stamp in _stamps(line))
    elif line.name == "DTSTART":
        collected.dtstart = _dtstart(line, zone, collected.dtstart)
    elif line.name == "RRULE":
        if line.params:
            raise _LineError(f"RRULE takes no parameters, got {';'.join(line.params)}")
        collected.rrules.append((line.index, line.value))
    elif line.name == "EXRULE":
        raise _LineError("EXRULE is deprecated by RFC 5545 and not supported: list excluded days with EXDATE")
    else:
        raise _LineError(f"unknown line {line.name!r}: expected {_NAMES}")


def _dtstart(line: _Line, zone: ZoneInfo, previous: tuple[int, datetime] | None) -> tuple[int, datetime]:
    """The single DTSTART value of ``line``, refusing a second DTSTART line."""
    if previous is not None:
        raise _LineError(f"DTSTART given again (first at recurrence[{previous[0]}])")
    stamps = _stamps(line)
    if len(stamps) != 1:
        raise _LineError(f"DTSTART takes one value, got {len(stamps)}")
    return line.index, stamps[0].instant(zone)


def _stamps(line: _Line) -> list[_Stamp]:
    """The comma-separated date/date-time values of an EXDATE, RDATE or DTSTART line."""
    unknown = sorted(set(line.params) - {"TZID", "VALUE"})
    if unknown:
        raise _LineError(f"unknown {line.name} parameter {unknown[0]!r}: expected TZID or VALUE")
    kind = line.params.get("VALUE", "DATE-TIME").upper()
    if kind not in ("DATE", "DATE-TIME"):
        raise _LineError(f"{line.name} VALUE={kind} is not supported: expected DATE or DATE-TIME")
    zone = _tzid(line.params["TZID"]) if "TZID" in line.params else None
    return [_stamp(line.name, raw.strip(), kind, zone) for raw in line.value.split(",")]


def _tzid(key: str) -> ZoneInfo:
    """The zone a TZID parameter names."""
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _LineError(f"unknown TZID {key!r}: expected an IANA zone such as America/New_York") from None


def _stamp(name: str, raw: str, kind: str, zone: ZoneInfo | None) -> _Stamp:
    """Parse one ``YYYYMMDD[THHMMSS[Z]]`` value."""
    match = _STAMP.fullmatch(raw)
    if match is None:
        raise _LineError(f"bad {name} value {raw!r}: {_STAMP_FORMS}")
    year, month, day, hour, minute, second, utc = match.groups()
    if kind == "DATE" and hour is not None:
        raise _LineError(f"bad {name} value {raw!r}: VALUE=DATE expects YYYYMMDD")
    if utc and zone is not None:
        raise _LineError(f"bad {name} value {raw!r}: a UTC value (ending in Z) takes no TZID")
    try:
        day_part = date(int(year), int(month), int(day))
        clock = None if hour is None else time(int(hour), int(minute), int(second))
    except ValueError as exc:
        raise _LineError(f"bad {name} value {raw!r}: {exc}") from None
    return _Stamp(day_part, clock, UTC if utc else zone)


def _rule_problem(rule: str, dtstart: datetime) -> str | None:
    """Why ``dateutil`` cannot build ``rule`` from ``dtstart``, or ``None`` when it can."""
    if "FREQ=" not in rule.upper().replace(" ", ""):
        return f"bad RRULE {rule!r}: FREQ is required"
    try:
        built = rrulestr(rule, dtstart=dtstart)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"bad RRULE {rule!r}: {exc}"
    if not isinstance(built, rrule):
        return f"bad RRULE {rule!r}: expected a single rule"
    return None
