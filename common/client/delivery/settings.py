"""How the client delivers to its subscribers: queue bounds, the full-queue policy, timeouts, retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.errors import ConfigError
from common.retry import Backoff

WhenFull = Literal["block", "drop"]


def _default_retry() -> Backoff:
    return Backoff(duration=0.1, factor=2.0, jitter=0.2, steps=0, cap=10.0)


@dataclass(frozen=True)
class DeliverySettings:
    """Delivery settings, shared by every subscriber of a client."""

    queue_size: int = 1000
    """Events waiting per source per subscriber, besides the batch being sent. A thousand rides out a
    subscriber restart of several seconds at a busy source's rate; at 1 KiB an event that is 1 MiB."""
    when_full: WhenFull = "block"
    """What ``put`` does when a lane is full. ``block`` (default) waits for room, slowing the source
    down (back-pressure) so nothing is lost; ``drop`` drops the newest event, counted as
    ``queue_full`` and logged, so one slow subscriber cannot hold up the others."""
    request_timeout: float = 10.0
    """Seconds one HTTP request, JetStream ack or NATS flush may take before it counts as failed and is
    retried. Ten seconds is twice what a healthy sensor needs under load, and half v0.11's 20 s."""
    retry: Backoff = field(default_factory=_default_retry)
    """Delays between attempts to deliver the same events: 0.1 s doubling with 20 % jitter, capped at
    10 s, forever (``steps`` 0). Short first delays hide a blip; the cap notices a long outage's end
    within ten seconds, for one small request per lane every ten seconds meanwhile. With ``steps``
    set, events still undelivered after the last attempt are dropped as ``retries_exhausted``."""
    retry_after_cap: float = 60.0
    """Most seconds a subscriber's ``Retry-After`` may hold delivery back. A minute respects a server
    asking for a pause without letting a bad header park a lane for hours."""
    stop_wait: float = 2.0
    """Seconds a delivery under way when a lane stops (its grace is over) gets to finish, so the
    event counts once, as delivered or as dropped. Past it the request is abandoned and the event
    counted as dropped (``shutdown``), though the subscriber may still have taken it."""
    nats_batch: int = 256
    """Most events published per NATS flush or JetStream round. Big enough to amortise the round trip,
    small enough that one failed flush resends little."""
    nats_reconnect_wait: float = 2.0
    """Seconds between NATS reconnect attempts (nats-py's default): frequent enough to resume soon after
    a broker restart, rare enough not to load a broker that is coming up."""

    def __post_init__(self) -> None:
        problems: dict[str, str] = {}
        if self.queue_size < 1:
            problems["queue_size"] = f"must be at least 1, got {self.queue_size}"
        if self.when_full not in ("block", "drop"):
            problems["when_full"] = f"must be block or drop, got {self.when_full!r}"
        for name in ("request_timeout", "retry_after_cap", "nats_reconnect_wait", "stop_wait"):
            if getattr(self, name) <= 0:
                problems[name] = f"must be more than 0 seconds, got {getattr(self, name)}"
        if self.nats_batch < 1:
            problems["nats_batch"] = f"must be at least 1, got {self.nats_batch}"
        if problems:
            raise ConfigError(problems)
