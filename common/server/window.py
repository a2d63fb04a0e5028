"""The unacknowledged window of one stream: events written to the client that it has not yet settled.

The server numbers every event it writes on a control-channel stream (``Event.sequence``) and counts
it, with its encoded size, until the client acknowledges it (every subscriber accepted it, or delivery
gave it up by policy). At the bound, in events or bytes, nothing more is written: the stream's writer
waits, the source's channel fills, and the source is paused (a webhook caller waits for its answer).
So what one source can have between "answered" and "accepted by every subscriber" is the bound,
wherever it is held: the gRPC windows, the client's queues or its requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

DEFAULT_MAX_EVENTS = 1000
"""Events a stream may have unacknowledged when the client asks for no other bound."""
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Encoded bytes a stream may have unacknowledged when the client asks for no other bound."""


class Window:
    """Sequences handed out and not yet released, bounded by ``max_events`` and ``max_bytes``.

    An event larger than ``max_bytes`` is still let through when nothing is outstanding, so it cannot
    stall its stream for good.
    """

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("a window needs room for at least one event and one byte")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._sizes: dict[int, int] = {}
        self._bytes = 0
        self._next = 1
        self._released = asyncio.Event()
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Events written and not yet acknowledged."""
        return len(self._sizes)

    @property
    def outstanding_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        """Whether the stream has stopped writing (ended, or stopped)."""
        return self._closed

    def fits(self, size: int) -> bool:
        """Whether one more event of ``size`` encoded bytes may be written now."""
        if not self._sizes:
            return True
        return len(self._sizes) < self.max_events and self._bytes + size <= self.max_bytes

    async def wait_for(self, size: int) -> bool:
        """Wait until an event of ``size`` bytes fits; False if the window was closed first."""
        while not self._closed and not self.fits(size):
            self._released.clear()
            await self._released.wait()
        return not self._closed

    def take(self, size: int) -> int:
        """Count one event of ``size`` bytes as written; its sequence."""
        sequence = self._next
        self._next += 1
        self._sizes[sequence] = size
        self._bytes += size
        return sequence

    def release(self, sequences: Iterable[int]) -> int:
        """The client is done with ``sequences``; how many of them were outstanding (unknown and
        repeated ones are ignored)."""
        released = 0
        for sequence in sequences:
            size = self._sizes.pop(sequence, None)
            if size is not None:
                self._bytes -= size
                released += 1
        if released:
            self._released.set()
        return released

    def close(self) -> None:
        """Wake every waiter for good: the stream is ending."""
        self._closed = True
        self._released.set()
