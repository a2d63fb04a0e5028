"""The one retry helper: a delay sequence with a cap and jitter, an early wake, numbered log lines.

``Backoff`` also reads the v0.11 ``backoff`` object of a stream config (``duration`` as an integer
of nanoseconds or a duration string, ``factor``, ``jitter``, ``steps``). Unlike v0.11, a missing
``backoff`` or ``steps: 0`` means retry forever with a capped delay (v0.11 panicked, argo-events#340),
and the last real error is kept when giving up (v0.11 reported "timed out waiting for the condition").
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from common.durations import DurationError, parse_duration_ns
from common.errors import ConfigError, RetriesExhausted

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts."""

    duration: float = 1.0
    """First delay in seconds. One second: long enough not to hammer a restarting peer."""
    factor: float = 2.0
    """Each delay is the previous one times this (at least 1)."""
    jitter: float = 0.1
    """Each delay grows by a random fraction of itself up to this, so replicas do not retry in step."""
    steps: int = 0
    """Attempts in all; 0 retries forever."""
    cap: float = 60.0
    """No delay exceeds this many seconds, so a long outage is still noticed within a minute of its end."""

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays to sleep before attempts 2, 3, ... (endless when ``steps`` is 0)."""
        rand = rng or random
        delay = self.duration
        made = 0
        while self.steps == 0 or made < self.steps - 1:
            base = min(delay, self.cap)
            yield min(base + base * self.jitter * rand.random(), self.cap) if self.jitter else base
            delay = min(delay * self.factor, self.cap)
            made += 1

    @classmethod
    def from_config(cls, value: object, *, field: str = "backoff", cap: float = 60.0) -> Backoff:
        """Read the v0.11 ``backoff`` object; ``None`` gives the default (retry forever, capped)."""
        if value is None:
            return cls(cap=cap)
        if not isinstance(value, Mapping):
            raise ConfigError({field: "must be a mapping with duration, factor, jitter and steps"})
        problems: dict[str, str] = {}
        duration = _read_duration(value.get("duration"), f"{field}.duration", problems)
        factor = _read_number(value.get("factor", 1.0), f"{field}.factor", problems, minimum=1.0)
        jitter = _read_number(value.get("jitter", 0.0), f"{field}.jitter", problems, minimum=0.0)
        steps = value.get("steps", 0)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            problems[f"{field}.steps"] = f"must be a whole number >= 0, got {steps!r}"
        unknown = sorted(set(value) - {"duration", "factor", "jitter", "steps"})
        for key in unknown:
            problems[f"{field}.{key}"] = "unknown field"
        if problems:
            raise ConfigError(problems)
        return cls(duration=duration, factor=factor, jitter=jitter, steps=int(steps), cap=cap)


def _read_duration(value: Any, field: str, problems: dict[str, str]) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool):
        problems[field] = f"must be nanoseconds or a duration such as 10s, got {value!r}"
        return 1.0
    if isinstance(value, int | float):
        seconds = float(value) / 1e9
    elif isinstance(value, str):
        try:
            seconds = parse_duration_ns(value) / 1e9
        except DurationError as exc:
            problems[field] = str(exc)
            return 1.0
    else:
        problems[field] = f"must be nanoseconds or a duration such as 10s, got {value!r}"
        return 1.0
    if not math.isfinite(seconds) or seconds < 0:
        problems[field] = f"must be a finite duration, not negative, got {value!r}"
        return 1.0
    return seconds


def _read_number(value: Any, field: str, problems: dict[str, str], *, minimum: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
    ):
        problems[field] = f"must be a finite number >= {minimum:g}, got {value!r}"
        return minimum
    return float(value)


async def sleep(delay: float, wakeup: asyncio.Event | None = None) -> bool:
    """Sleep ``delay`` seconds, or less if ``wakeup`` is set; True when woken early."""
    if wakeup is None:
        await asyncio.sleep(delay)
        return False
    try:
        async with asyncio.timeout(delay):
            await wakeup.wait()
    except TimeoutError:
        return False
    return True


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _log,
    wakeup: asyncio.Event | None = None,
    hint: Callable[[BaseException], float | None] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds, sleeping the backoff's delays between failures.

    Only exceptions in ``retry_on`` are retried; others propagate at once. ``hint`` may read a
    server's advice (``Retry-After``) from the error: the longer of it and the backoff delay is used,
    within the cap. Each failure is logged as ``<what>: attempt #2/5 failed; will retry in 1.1s: ...``.
    When the attempts run out, ``RetriesExhausted`` is raised from the last error.
    """
    delays = backoff.delays()
    total = str(backoff.steps) if backoff.steps else "inf"
    number = 0
    while True:
        number += 1
        try:
            return await attempt()
        except retry_on as exc:
            delay = next(delays, None)
            if delay is None:
                logger.error("%s: attempt #%d/%s failed; giving up: %r", what, number, total, exc)
                raise RetriesExhausted(what, number, exc) from exc
            advised = hint(exc) if hint else None
            if advised is not None:
                delay = min(max(delay, advised), backoff.cap)
            logger.warning(
                "%s: attempt #%d/%s failed; will retry in %.2fs: %r", what, number, total, delay, exc
            )
            await sleep(delay, wakeup)
