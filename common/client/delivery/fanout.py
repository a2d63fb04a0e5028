"""Fan one event out to every subscriber: encode it once per format, queue it on each concurrently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from common.client.delivery.subscriber import Subscriber, SubscriberStatus
from common.client.model import Format, Message, ReceivedEvent

_log = logging.getLogger(__name__)

Encoder = Callable[[ReceivedEvent, Format], Message]
"""Writes an event in one CloudEvents format (``common.client.cloudevent.encode`` with its identity)."""


class Fanout:
    """The subscribers of one client, fed together.

    ``publish`` returns once every subscriber has queued the event; with the ``block`` policy a full
    lane makes it wait, which is the back-pressure on the source's stream.
    """

    def __init__(self, subscribers: Sequence[Subscriber]) -> None:
        self.subscribers = tuple(subscribers)
        self._formats = sorted({s.spec.format for s in self.subscribers}, key=lambda f: f.value)

    async def start(self) -> None:
        """Open every subscriber's transport."""
        await asyncio.gather(*(s.start() for s in self.subscribers))

    async def publish(self, received: ReceivedEvent, encode: Encoder) -> None:
        """Encode ``received`` once per distinct format and queue it on every subscriber."""
        if received.receipt is not None:
            received.receipt.expect(len(self.subscribers))
        messages: dict[Format, Message] = {}
        failures: dict[Format, str] = {}
        for fmt in self._formats:
            try:
                messages[fmt] = encode(received, fmt)
            except Exception as exc:  # noqa: BLE001 - one format's failure costs no other subscriber the event
                failures[fmt] = f"{type(exc).__name__}: {exc}"
                _log.exception("Cannot write an event of %r in %s mode.", received.source, fmt.value)
        if len(self.subscribers) == 1 and not failures:  # the common case: no task per event
            subscriber = self.subscribers[0]
            await subscriber.put(messages[subscriber.spec.format])
            return
        puts = []
        for subscriber in self.subscribers:
            fmt = subscriber.spec.format
            if fmt in failures:
                subscriber.refuse(received, "unencodable", failures[fmt])
            else:
                puts.append(subscriber.put(messages[fmt]))
        await asyncio.gather(*puts)

    async def remove_source(self, source: str, grace: float) -> None:
        """Drain and stop ``source``'s lane on every subscriber, each for up to ``grace`` seconds."""
        await asyncio.gather(*(s.remove_source(source, grace) for s in self.subscribers))

    async def close(self, grace: float) -> None:
        """Close every subscriber, draining each for up to ``grace`` seconds at the same time."""
        await asyncio.gather(*(s.close(grace) for s in self.subscribers))

    def status(self) -> list[SubscriberStatus]:
        """Each subscriber's status, in configuration order."""
        return [s.status() for s in self.subscribers]
