"""HTTP delivery: one POST per event over kept-alive connections to each subscriber (one per request
in flight; ``common.client.delivery.http_wire`` writes and reads them).

2xx means accepted. 408, 429, 5xx and transport faults (refused, reset, timeout) are retryable, with
the server's ``Retry-After`` (seconds or an HTTP date) as advice, capped. Any other status is a
permanent rejection: a v0.11 sensor answers 400 for a source it does not know, and resending will not
change its mind. Every response body is read, so its connection goes back to the pool (v0.11 never
closed them). Redirects are not followed: re-POSTing an event elsewhere is the operator's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from yarl import URL

from common import tasks
from common.client.delivery.errors import PermanentDeliveryError, Progress, RetryableDeliveryError
from common.client.delivery.http_wire import Pool, WireError
from common.client.delivery.settings import DeliverySettings
from common.client.model import Message
from common.client.subscribers import SubscriberSpec

_log = logging.getLogger(__name__)
RETRYABLE_STATUSES = frozenset({408, 429})
"""Client-error statuses that mean "not now" rather than "never"; every 5xx is retryable too."""


class HttpTransport:
    """POSTs each message of a batch, in order, to one HTTP subscriber."""

    name = "http"

    def __init__(self, spec: SubscriberSpec, settings: DeliverySettings) -> None:
        self._spec = spec
        self._settings = settings
        self._pool: Pool | None = None
        self._reachable = False
        self.problem: str | None = None
        """Why the subscriber could not be reached at the last contact; None once it was."""
        self._probe: asyncio.Task[None] | None = None
        self.max_batch = 1
        """One message per send: each is its own request anyway, and a lane that is told to stop
        stops between two requests, so each event's outcome is known."""

    @property
    def connected(self) -> bool:
        """False from a request that could not reach the server until one does (whatever it answers)."""
        return self._reachable

    async def connect(self) -> None:
        """Ready the connection pool; no request is made until there is an event."""
        if self._pool is None:
            self._pool = Pool(self._spec.address)
            self._reachable = True
            self._probe = tasks.start(self._look(), name=f"look for {self._spec.display}", logger=_log)

    async def _look(self) -> None:
        """Open (and close) one TCP connection at start, so a subscriber that is down says so at once,
        in the log and in status, rather than at the first event."""
        url = URL(self._spec.address)
        try:
            async with asyncio.timeout(self._settings.request_timeout):
                _, writer = await asyncio.open_connection(url.host, url.port)
        except (OSError, TimeoutError) as exc:
            if self.problem is None and self._reachable:  # no request has told otherwise yet
                self._reachable = False
                self.problem = f"cannot connect: {_describe(exc)}"
                _log.warning(
                    "Subscriber %s is not reachable (%s); events are queued and retried until it is.",
                    self._spec.display,
                    self.problem,
                )
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def send(self, batch: Sequence[Message], progress: Progress) -> None:
        """POST each message in order, telling ``progress`` after each; on a failure, the error's
        ``accepted`` counts those taken."""
        for index, message in enumerate(batch):
            await self._post(message, accepted=index)
            progress(index + 1)

    async def close(self) -> None:
        """Close the pooled connections (a request under way fails)."""
        if self._probe is not None:
            await tasks.stop(self._probe, timeout=1.0, logger=_log)
            self._probe = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    async def _post(self, message: Message, *, accepted: int) -> None:
        display = self._spec.display
        if self._pool is None:
            raise RetryableDeliveryError(display, "not connected yet", accepted=accepted)
        try:
            async with asyncio.timeout(self._settings.request_timeout):
                answer = await self._pool.post(message.headers, message.body)
        except TimeoutError as exc:
            self._reachable, self.problem = False, f"no answer within {self._settings.request_timeout:g}s"
            raise RetryableDeliveryError(
                display, f"no answer within {self._settings.request_timeout:g}s", accepted=accepted
            ) from exc
        except (OSError, WireError) as exc:
            self._reachable, self.problem = False, f"request failed: {_describe(exc)}"
            raise RetryableDeliveryError(display, self.problem, accepted=accepted) from exc
        except ValueError as exc:  # a header the event cannot be sent with: resending will not help
            raise PermanentDeliveryError(display, str(exc), reason="rejected", accepted=accepted) from exc
        status, text, retry_after = answer.status, answer.body, answer.retry_after
        self._reachable, self.problem = True, None
        if 200 <= status < 300:
            return
        said = f"HTTP {status}: {_snippet(text)}"
        if status in RETRYABLE_STATUSES or status >= 500:
            advice = parse_retry_after(retry_after, cap=self._settings.retry_after_cap)
            raise RetryableDeliveryError(display, said, retry_after=advice, accepted=accepted)
        raise PermanentDeliveryError(display, said, reason="rejected", accepted=accepted)


def parse_retry_after(value: str | None, *, cap: float, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), within ``[0, cap]``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        _log.debug("Ignoring an unreadable Retry-After header: %r", value)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - (now or datetime.now(UTC))).total_seconds(), 0.0), cap)


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip()
    return (text[:limit] + "...") if len(text) > limit else (text or "(no body)")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
