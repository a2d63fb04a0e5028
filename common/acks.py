"""Acknowledgements that arrive out of order, turned into the in-order answer a broker needs.

The client acknowledges each event once every subscriber accepted it, and events of one source can be
accepted out of order (several subscribers, ``?inflight=N``). A broker that takes one position per
partition (a Kafka offset) or answers in order (MQTT's PUBACKs) can only be told about the
**contiguous prefix**: everything up to the first event still unsettled. ``Prefix`` keeps that, per
stream of positions, in O(1) amortised per event.
"""

from __future__ import annotations

from collections import deque


class Prefix:
    """Positions handed out in increasing order; which of them may be told to the broker.

    ``add`` each position as its event is yielded; ``settle`` it when its event is done. ``committable``
    is the position after the last of the contiguous settled prefix (Kafka's "next offset to read"),
    or None while nothing new can be told.
    """

    __slots__ = ("_done", "_order", "_told")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        """Positions added and not yet passed by the prefix, in order."""
        self._done: set[int] = set()
        """Settled positions the prefix has not reached yet."""
        self._told = -1
        """The last position the prefix passed."""

    def __len__(self) -> int:
        """Positions added and not yet passed by the prefix (settled or not)."""
        return len(self._order)

    @property
    def unsettled(self) -> int:
        """Positions added and not settled yet."""
        return len(self._order) - len(self._done)

    @property
    def newest(self) -> int:
        """The last position handed out (-1 before any)."""
        return self._order[-1] if self._order else self._told

    @property
    def last(self) -> int:
        """The last position the prefix passed (-1 before any)."""
        return self._told

    def add(self, position: int) -> None:
        """Hand out ``position``, later than every position handed out before."""
        if self._order and position <= self._order[-1]:
            raise ValueError(f"position {position} is not after {self._order[-1]}")
        self._order.append(position)

    def settle(self, position: int) -> int | None:
        """``position``'s event is done; the new end of the contiguous prefix (the last position it
        passed) when it moved, else None. Unknown or repeated positions are ignored."""
        if not self._order or position < self._order[0] or position in self._done:
            return None
        self._done.add(position)
        moved = False
        while self._order and self._order[0] in self._done:
            self._told = self._order.popleft()
            self._done.discard(self._told)
            moved = True
        return self._told if moved else None
