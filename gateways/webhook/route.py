"""One route: what a running webhook source serves at (port, endpoint, method), and its event hand-off."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from common.events import NotWritten, SourceEvent
from common.server.channel import Channel
from gateways.webhook.auth import Credentials
from gateways.webhook.config import WebhookConfig
from gateways.webhook.ratelimit import TokenBucket

ROUTE_BUFFER = 16
"""Requests whose events wait for the source to take them; more wait in their handlers (back-pressure
reaches the caller, who waits for the 200)."""

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(eq=False)
class Route:
    """A source's endpoint on a port. ``available`` is False once its stream broke (503 until it goes)."""

    source: str
    """The event-source name."""
    config: WebhookConfig
    """Its validated config."""
    credentials: Credentials
    """What a request must carry."""
    logger: Logger
    """Tags records with the source name."""
    limiter: TokenBucket | None = None
    """The endpoint's rate limit, if any."""
    channel: Channel[SourceEvent] = field(default_factory=lambda: Channel(ROUTE_BUFFER))
    """Events from request handlers to the source."""
    available: bool = True
    """False after an abnormal end: requests get 503 until the route expires or a new source takes it."""
    expiry: asyncio.TimerHandle | None = None
    """When an unavailable route goes (404 after that)."""

    @classmethod
    def of(cls, source: str, config: WebhookConfig, logger: Logger) -> Route:
        """A route for ``config``; its secrets are read now (``SourceFailed``/``SourceUnavailable``)."""
        credentials = Credentials(config.bearer_token, config.signature)
        credentials.load()
        limit = config.rate_limit
        limiter = TokenBucket(limit.per_second, limit.burst) if limit is not None else None
        return cls(source, config, credentials, logger, limiter)

    def stop_taking(self) -> None:
        """Take no new events (503 with ``Retry-After``); those already on the channel still go."""
        self.available = False
        self.channel.close()

    def close(self, outcome: BaseException | None = None) -> None:
        """Take no more events; the ones still waiting are failed, so their callers get 503."""
        self.channel.close(outcome)
        fail_unwritten(self.channel.drain())
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


def fail_unwritten(events: list[SourceEvent]) -> None:
    """Tell each event's request handler that it will never reach the stream."""
    for event in events:
        if event.written is not None and not event.written.done():
            event.written.set_exception(NotWritten("the webhook source stopped before taking the event"))
