"""One running source behind a stream: its supervised task, the channel to the stream, how it ends.

A session ends in one of three ways, and none of them loses an event its source has answered for
(a webhook answers its caller once the event is written to the stream):

- **drain** (the client asked, or the server is stopping): the source takes nothing new. One that
  registered ``SourceContext.on_drain`` yields what it holds and returns; any other is cancelled (it
  holds nothing). Everything already in the channel is still written, within the stream's window.
- **stop** (a drain that took too long, a stream that is gone): the source is cancelled now, and the
  events not yet written are failed with ``NotWritten`` (a webhook caller gets 503 and retries).
- the source ends by itself: completed, or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from common import tasks
from common.events import NotDelivered, NotWritten, SourceEvent
from common.kinds import Connection, GatewayKind, SourceContext
from common.logs import SourceLogger
from common.rpc import eventing_pb2
from common.server.channel import Channel, ChannelClosed
from common.server.outcome import ShuttingDown, StreamEnd, stream_end
from common.server.window import Window

MAX_GROUP_EVENTS = 64
"""Events sent in one message to a client that reads batches (``EventSource.batches``)."""
MAX_GROUP_BYTES = 1024 * 1024
"""Encoded bytes grouped into one message (payloads, extensions and all): a quarter of gRPC's default
4 MiB receive limit. A larger event travels alone, as it would to any client."""


STATE_MARK = SourceEvent(payload=b"")
"""Put in a session's channel where the source's connection changed; never sent as an event."""


def mark_written(event: SourceEvent) -> None:
    if event.written is not None and not event.written.done():
        event.written.set_result(None)


def mark_delivered(event: SourceEvent) -> None:
    if event.delivered is not None and not event.delivered.done():
        event.delivered.set_result(None)


def fail_unwritten(events: list[SourceEvent]) -> None:
    for event in events:
        if event.written is not None and not event.written.done():
            event.written.set_exception(
                NotWritten("the event source's stream ended before the event was sent")
            )
    fail_undelivered(events)


def fail_undelivered(events: Iterable[SourceEvent]) -> None:
    for event in events:
        if event.delivered is not None and not event.delivered.done():
            event.delivered.set_exception(
                NotDelivered("the event source's stream ended before the client acknowledged the event")
            )


def state_message(connection: Connection) -> eventing_pb2.SourceState:
    """The ``SourceState`` a client that asked is sent for ``connection``."""
    up = eventing_pb2.SourceState.CONNECTED if connection.connected else eventing_pb2.SourceState.DISCONNECTED
    return eventing_pb2.SourceState(connection=up, reason=connection.reason, reconnects=connection.reconnects)


def group_end(sizes: list[int], start: int, limit: int, window: Window | None = None) -> int:
    """Where the group of messages sent as one, from ``start``, ends (at least one message): at most
    ``limit`` messages and ``MAX_GROUP_BYTES``, and no more than ``window`` has room for."""
    end, size = start + 1, sizes[start]
    room_events = (window.max_events - window.outstanding) if window is not None else limit
    room_bytes = (window.max_bytes - window.outstanding_bytes) if window is not None else MAX_GROUP_BYTES
    while end < len(sizes) and end - start < min(limit, room_events):
        size += sizes[end]
        if size > min(MAX_GROUP_BYTES, room_bytes):
            break
        end += 1
    return end


@dataclass(eq=False)
class Session:
    """One running stream's source."""

    name: str
    config: Any
    channel: Channel[SourceEvent]
    ctx: SourceContext
    log: SourceLogger
    window: Window | None = None
    """The unacknowledged window of a control-channel stream; None on StartEventSource (v0.11)."""
    task: asyncio.Task[None] | None = field(default=None)
    unsent: list[SourceEvent] = field(default_factory=list)
    """Events taken from the channel but not yet written to the stream."""
    writing: list[SourceEvent] = field(default_factory=list)
    """The events of the message being written now: a stop leaves them be (gRPC is writing them,
    the client will read them); they are marked written once the write is done, or failed if the
    stream ends first."""
    draining: bool = False
    """Asked to finish: the source takes nothing new; what it holds is still written."""
    halted: bool = False
    """Stopped: nothing more is written; what was not written has been failed."""
    server_stopping: bool = False
    """The server is shutting down: the stream ends UNAVAILABLE, so its client retries elsewhere."""
    awaiting: dict[int, SourceEvent] = field(default_factory=dict)
    """Written events waiting for the client's acknowledgement, by sequence (acknowledging clients
    only, and only events with a ``delivered`` future)."""
    state_marks: int = 0
    """State marks in the channel not yet taken (``watch_state``)."""

    def watch_state(self) -> None:
        """Tell the client of every change of the source's connection, in order with its events: a
        mark goes into the channel after the events sent before the change (it never waits for room)."""

        def changed(_: Connection) -> None:
            if self.ctx.ready.is_set():  # before it serves, the first state waits for ``serving``
                self.state_marks += 1
                self.channel.push(STATE_MARK)

        self.ctx.watchers.append(changed)
        if self.ctx.ready.is_set():
            changed(self.ctx.connection)

    def acknowledged(self, sequences: Iterable[int]) -> None:
        """The client acknowledged ``sequences``: their events are delivered."""
        if self.awaiting:
            for sequence in sequences:
                event = self.awaiting.pop(sequence, None)
                if event is not None:
                    mark_delivered(event)

    def start(self, kind: GatewayKind[Any]) -> None:
        self.task = tasks.start(self._pump(kind), name=f"event source {self.name!r}", logger=self.log)
        if not kind.says_when_serving:
            self.ctx.serving()

    @property
    def held(self) -> int:
        """Events the source handed over that are not written yet."""
        return len(self.writing) + len(self.unsent) + len(self.channel)

    async def frames(self, group_limit: int) -> AsyncIterator[eventing_pb2.Event | eventing_pb2.SourceState]:
        """The messages to write, in order: one event, or up to ``group_limit`` in ``Event.batch``,
        and a ``SourceState`` whenever the source's connection changed (``watch_state``).

        A group's events are marked written when the next message is asked for, that is, once the
        RPC has written this one. With a window, each event gets its sequence and the writer waits
        for room before each group. An event's ``delivered`` is resolved then too, unless the client
        acknowledges: then once it does.
        """
        window = self.window
        acknowledging = window is not None and self.ctx.acknowledges
        while not self.halted and (received := await self.channel.receive()) is not None:
            segments = self._segments(received) if self.state_marks else [(received, False)]
            for index, (batch, state_after) in enumerate(segments):
                later = [event for rest, _ in segments[index + 1 :] for event in rest]
                messages = [event.to_proto(self.name) for event in batch]
                sizes = [message.ByteSize() for message in messages]
                self.unsent = [*batch, *later]
                start = 0
                while start < len(batch):
                    if window is not None and not await window.wait_for(sizes[start]):
                        return
                    if self.halted:
                        return
                    stop = group_end(sizes, start, group_limit, window)
                    if window is not None:
                        for at in range(start, stop):
                            messages[at].sequence = window.take(sizes[at])
                            if acknowledging and batch[at].delivered is not None:
                                self.awaiting[messages[at].sequence] = batch[at]
                                messages[at].awaited = True
                    self.writing, self.unsent = batch[start:stop], [*batch[stop:], *later]
                    if stop - start == 1:
                        yield messages[start]
                    else:
                        yield eventing_pb2.Event(batch=messages[start:stop])
                    for event in self.writing:
                        mark_written(event)
                        if not acknowledging:
                            mark_delivered(event)
                    self.writing = []
                    start = stop
                if state_after:
                    yield state_message(self.ctx.connection)

    def _segments(self, received: list[SourceEvent]) -> list[tuple[list[SourceEvent], bool]]:
        """``received`` cut at each state mark: (events, whether the state follows them)."""
        segments: list[tuple[list[SourceEvent], bool]] = []
        current: list[SourceEvent] = []
        for item in received:
            if item is STATE_MARK:
                self.state_marks -= 1
                segments.append((current, True))
                current = []
            else:
                current.append(item)
        if current:
            segments.append((current, False))
        return segments

    def drain(self, reason: str) -> None:
        """Finish: take nothing new, write what is held, then end (see the module docstring)."""
        if self.draining or self.halted:
            return
        self.draining = True
        self.ctx.end.value = self.ctx.end.value or reason
        if not self.ctx.drainers:
            if self.task is not None:
                self.task.cancel(f"the event source is draining ({reason})")
            return
        for callback in self.ctx.drainers:
            try:
                callback()
            except Exception:
                self.log.exception("Draining the event source failed; stopping it instead.")
                self.stop(reason)
                return

    def stop(self, reason: str) -> None:
        """End now: the source is cancelled and the events not yet written are failed."""
        if self.halted:
            return
        self.halted = True
        self.ctx.end.value = self.ctx.end.value or reason
        self.channel.close(None)
        if self.window is not None:
            self.window.close()
        if self.task is not None:
            self.task.cancel(f"the event source is stopped ({reason})")
        fail_unwritten([*self.unsent, *self.channel.drain()])
        self.unsent = []

    def _fail_awaiting(self) -> None:
        """No acknowledgement can come any more: the written events not acknowledged are not delivered
        (a broker redelivers them)."""
        awaiting, self.awaiting = list(self.awaiting.values()), {}
        fail_undelivered(awaiting)

    def end(self) -> StreamEnd:
        """The status the stream ends with."""
        if self.server_stopping:
            return stream_end(ShuttingDown())
        if self.halted:
            return StreamEnd(stream_end(None).code, "event source stopped")
        if self.draining:
            return StreamEnd(stream_end(None).code, "event source drained")
        return stream_end(self.channel.outcome)

    async def close(self, stop_timeout: float) -> None:
        """After the stream: stop the source's task and fail whatever was never written."""
        self.channel.close(None)
        if self.window is not None:
            self.window.close()
        if self.task is not None:
            await tasks.stop(self.task, timeout=stop_timeout, logger=self.log, reason="stream ended")
        self.fail_unwritten()

    def fail_unwritten(self) -> None:
        """The stream has ended: whatever was not written, the message being written included, never
        will be (its callers get 503)."""
        fail_unwritten([*self.writing, *self.unsent, *self.channel.drain()])
        self.writing, self.unsent = [], []
        self._fail_awaiting()

    async def _pump(self, kind: GatewayKind[Any]) -> None:
        """Run the source, handing each event to the stream; close the channel with how it ended."""
        outcome: BaseException | None = None
        try:
            async with contextlib.aclosing(kind.run(self.ctx, self.config)) as events:
                async for event in events:
                    try:
                        await self.channel.send(event)
                    except BaseException:
                        fail_unwritten([event])  # cancelled while waiting for room: never sent
                        raise
        except ChannelClosed:
            outcome = None  # the stream ended first; the source had nothing more to say
        except asyncio.CancelledError:
            outcome = ShuttingDown() if self.server_stopping else None
            raise
        except Exception as exc:
            outcome = exc
            raise
        finally:
            self.channel.close(outcome)
