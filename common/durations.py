"""Go-style durations (``10s``, ``1m30s``, ``500ms``), as the v0.11 configs write them.

Go's ``time.ParseDuration`` grammar: an optional sign, then one or more decimal numbers, each with a
unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``). ``0`` alone is allowed. Days are not a unit.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """A text that is not a Go duration; the message says what is wrong with it."""


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into whole nanoseconds."""
    s = text.strip()
    if not s:
        raise DurationError("empty duration")
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            rest = s[pos:]
            if re.match(r"\d+\.?\d*$", rest):
                raise DurationError(f"missing unit in duration {text!r} (use ns, us, ms, s, m or h)")
            raise DurationError(f"invalid duration {text!r}")
        number, unit = m.group(1), m.group(2)
        whole, _, frac = number.partition(".")
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // (10 ** len(frac))
        pos = m.end()
    return sign * total


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration string into a ``timedelta`` (microsecond resolution)."""
    return timedelta(microseconds=parse_duration_ns(text) / 1000)


def format_duration(seconds: float) -> str:
    """Render seconds the short way Go prints them (``1m30s``, ``500ms``), for messages."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        ms = s * 1000
        return f"{sign}{ms:g}ms" if ms >= 1 else f"{sign}{s * 1_000_000:g}us"
    hours, rem = divmod(s, 3600)
    minutes, secs = divmod(rem, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if minutes or hours:
        out += f"{int(minutes)}m"
    out += f"{secs:g}s"
    return sign + out
