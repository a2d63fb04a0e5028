"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up; one request takes one token."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``burst`` requests at once, then ``rate`` a second; says how long until the next one."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a rate above 0 and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def retry_after(self) -> int:
        """Whole seconds until a token is there (at least 1): the ``Retry-After`` value."""
        self._refill()
        return max(1, math.ceil((1 - self._tokens) / self.rate))
