"""One attempt at streaming a source from the server: the control channel when the server has it,
else v0.11's ``StartEventSource``.

Over the control channel (``StreamEventSource``) the client acknowledges each event once every
subscriber is done with it (a receipt's ``on_done``), and can drain or stop the source: the server
then writes what it holds, sends ``StreamEnd``, and the client half-closes to confirm it has read
everything. Acknowledgements are coalesced: they are written once a quarter of the window is pending
(so delivered events never keep the window shut: with the window full, at least that many are
delivered before the rest can be), with a control, at the end, or within ``ACK_DELAY`` after the
first of them (jittered, so thousands of streams that started together do not write together). A
busy stream costs one small message per many events, and 10,000 quiet streams do not cost a write
per event. An event someone waits for (``Event.awaited``: a broker holds it until acknowledged, a
caller waits for the answer) is acknowledged within ``PROMPT_DELAY`` instead.

The client acknowledges an event only once every subscriber accepted it or delivery gave it up by
policy (``StreamStart.acknowledges``), and asks for the source's connection state
(``SourceState``), which ``on_state`` hears.

Over ``StartEventSource`` there is no acknowledgement and no drain: the client's one signal is
cancelling the call, which throws away what is in flight (the gRPC windows).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import grpc

from common import retry, tasks
from common.kinds import END_CHANGED, END_REMOVED, END_SHUTDOWN
from common.logs import SourceLogger
from common.rpc import eventing_pb2

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

PROMPT_DELAY = 0.005
"""Seconds an acknowledgement someone waits for (``Event.awaited``: a broker's ack, a caller's answer)
may wait for others to join it."""
ACK_DELAY = 60.0
"""Seconds an acknowledgement may wait for others to travel with it, when fewer than a quarter of
the window are pending: the window does not need them yet, and a source that fires every few seconds
would otherwise cost a gRPC write per event."""

REASONS: dict[str, eventing_pb2.StopReason.ValueType] = {
    END_REMOVED: eventing_pb2.STOP_REASON_REMOVED,
    END_CHANGED: eventing_pb2.STOP_REASON_CHANGED,
    END_SHUTDOWN: eventing_pb2.STOP_REASON_SHUTDOWN,
}


@dataclass(frozen=True)
class UnackedBound:
    """The most of one source's events the client may hold unacknowledged (see ``StreamStart``)."""

    events: int = 1000
    """Events between "written to the stream" (a webhook caller answered) and "every subscriber is
    done with it": the client's queues, its requests in flight and the gRPC windows, together."""
    bytes: int = 4 * 1024 * 1024
    """The same bound in encoded bytes."""


class PlainStream:
    """``StartEventSource``: events only."""

    controlled = False

    def __init__(self, stub: EventingAsyncStub, request: eventing_pb2.EventSource) -> None:
        self._call = stub.StartEventSource(request)

    async def open(self) -> None:
        return None

    def messages(self) -> AsyncIterator[eventing_pb2.Event]:
        return aiter(self._call)

    def acknowledge(self, sequence: int) -> None:
        return None

    def drain(self, reason: str) -> None:
        return None

    def stop(self, reason: str) -> None:
        return None

    async def close(self) -> None:
        self._call.cancel()  # an abandoned aio call is never collected, so never cancelled (grpc#43462)


class ControlledStream:
    """``StreamEventSource``: start, read, acknowledge, drain or stop, confirm the end."""

    controlled = True

    def __init__(
        self,
        stub: EventingAsyncStub,
        request: eventing_pb2.EventSource,
        bound: UnackedBound,
        log: SourceLogger,
        on_state: Callable[[eventing_pb2.SourceState], None] | None = None,
    ) -> None:
        self._call = stub.StreamEventSource()
        self._start = eventing_pb2.StreamControl(
            start=eventing_pb2.StreamStart(
                source=request,
                max_unacked_events=bound.events,
                max_unacked_bytes=bound.bytes,
                acknowledges=True,  # only once every subscriber is done with an event (Receipt)
                source_state=on_state is not None,
            )
        )
        self._on_state = on_state
        self._prompt: set[int] = set()
        """Sequences read with ``awaited``: their acknowledgements go within ``PROMPT_DELAY``."""
        self._prompt_timer: asyncio.TimerHandle | None = None
        self._log = log
        self._acks: list[int] = []
        self._ack_batch = max(1, bound.events // 4)
        """Pending acknowledgements that are written without waiting for ``ACK_DELAY``."""
        self._controls: list[eventing_pb2.StreamControl] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        """Write now: a control, the end, or enough acknowledgements are waiting."""
        self._ended = False
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Send the start; a server without this method answers UNIMPLEMENTED (at the first read)."""
        await self._call.write(self._start)
        self._writer = tasks.start(self._write(), name=f"controls of event source {self._log.source!r}")

    async def messages(self) -> AsyncIterator[eventing_pb2.Event]:
        """The events until ``StreamEnd``; then the end is confirmed and the status read (a fault
        raises ``AioRpcError``, as on ``StartEventSource``)."""
        while True:
            read = await self._call.read()
            if read is grpc.aio.EOF:
                break
            message = cast(eventing_pb2.StreamMessage, read)
            if message.HasField("event"):
                event = message.event
                for one in event.batch or (event,):
                    if one.awaited:
                        self._prompt.add(one.sequence)
                yield event
            elif message.HasField("state"):
                if self._on_state is not None:
                    self._on_state(message.state)
            elif message.HasField("end"):
                self._log.debug("The server ends the stream: %s.", message.end.reason)
                await self._confirm_end()
            # else: a message this client does not know (a newer server); ignored
        code = await self._call.code()
        if code is not grpc.StatusCode.OK:
            raise grpc.aio.AioRpcError(
                code,
                await self._call.initial_metadata(),
                await self._call.trailing_metadata(),
                await self._call.details(),
            )

    def acknowledge(self, sequence: int) -> None:
        if not self._ended:
            self._acks.append(sequence)
            self._wake.set()
            if len(self._acks) >= self._ack_batch:
                self._urgent.set()
            elif sequence in self._prompt and self._prompt_timer is None:
                self._prompt_timer = asyncio.get_running_loop().call_later(PROMPT_DELAY, self._write_soon)
            self._prompt.discard(sequence)

    def _write_soon(self) -> None:
        self._prompt_timer = None
        self._urgent.set()

    def drain(self, reason: str) -> None:
        """Ask the server to finish the source: nothing new, what it holds still comes."""
        self._send(
            eventing_pb2.StreamControl(
                drain=eventing_pb2.Drain(reason=REASONS.get(reason, eventing_pb2.STOP_REASON_UNSPECIFIED))
            )
        )

    def stop(self, reason: str) -> None:
        """Ask the server to stop the source now; what it has written still comes."""
        self._send(
            eventing_pb2.StreamControl(
                stop=eventing_pb2.Stop(reason=REASONS.get(reason, eventing_pb2.STOP_REASON_UNSPECIFIED))
            )
        )

    async def close(self) -> None:
        self._ended = True
        if self._prompt_timer is not None:
            self._prompt_timer.cancel()
        if self._writer is not None:
            await tasks.stop(self._writer, timeout=1.0, logger=self._log)
        self._call.cancel()  # nothing happens to a call that has ended

    def _send(self, control: eventing_pb2.StreamControl) -> None:
        if not self._ended:
            self._controls.append(control)
            self._wake.set()
            self._urgent.set()

    async def _confirm_end(self) -> None:
        """Nothing follows ``StreamEnd``: write what is pending, then half-close."""
        self._ended = True
        self._wake.set()
        self._urgent.set()
        if self._writer is not None:
            await asyncio.wait({self._writer})

    async def _write(self) -> None:
        """The one writer of the call: controls, then the acknowledgements gathered meanwhile."""
        try:
            while True:
                await self._wake.wait()
                if not self._urgent.is_set():  # only acknowledgements: let more join them
                    await retry.sleep(ACK_DELAY * random.uniform(0.5, 1.0), self._urgent)
                self._wake.clear()
                self._urgent.clear()
                controls, self._controls = self._controls, []
                for control in controls:
                    await self._call.write(control)
                if self._acks:
                    acks, self._acks = self._acks, []
                    await self._call.write(
                        eventing_pb2.StreamControl(ack=eventing_pb2.Acknowledge(sequences=acks))
                    )
                if self._ended:
                    await self._call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            # The call has ended (the reader sees why); nothing more can be written.
            self._log.debug("Writing to the event source's stream stopped: %r", exc)


SourceStream = PlainStream | ControlledStream
