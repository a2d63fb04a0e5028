"""A bounded hand-off from a source task to its gRPC stream, closed with the source's outcome.

The sender is paused when the buffer is full (back-pressure up to the external system). The
receiver takes everything buffered at once, so a fast source costs one wake-up per batch, not per
event. ``close`` never blocks, so a finishing or cancelled source can always say how it ended.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """Sending on a channel that has been closed."""


class Channel(Generic[T]):
    """A bounded FIFO with an end: ``send`` waits for room, ``receive`` returns a batch or None at the end."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("channel size must be at least 1")
        self._size = size
        self._items: deque[T] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.outcome: BaseException | None = None
        """Why the channel was closed: None for a clean end of the source, else its error."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Items buffered now."""
        return len(self._items)

    async def send(self, item: T) -> None:
        """Append ``item``, waiting while the buffer is full; ``ChannelClosed`` once closed."""
        while len(self._items) >= self._size and not self._closed:
            self._writable.clear()
            await self._writable.wait()
        if self._closed:
            raise ChannelClosed()
        self._items.append(item)
        self._readable.set()

    async def receive(self) -> list[T] | None:
        """Everything buffered (waiting for at least one item), or None once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        batch = list(self._items)
        self._items.clear()
        self._writable.set()
        return batch

    def push(self, item: T) -> None:
        """Append ``item`` without waiting for room (rare, small items: a source's state); ignored
        once closed."""
        if not self._closed:
            self._items.append(item)
            self._readable.set()

    def drain(self) -> list[T]:
        """Take whatever is still buffered, without waiting."""
        items = list(self._items)
        self._items.clear()
        self._writable.set()
        return items

    def close(self, outcome: BaseException | None = None) -> None:
        """End the channel; the first outcome given is kept. Buffered items can still be received."""
        if not self._closed:
            self._closed = True
            self.outcome = outcome
        self._readable.set()
        self._writable.set()
