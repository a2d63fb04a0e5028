"""The Eventing servicer: validates event sources, runs each as a supervised session, streams its events.

Two ways to stream a source, one session behind both:

- ``StartEventSource`` (v0.11): events only; the client's one signal is cancelling the call. Written
  to the stream is all the server can know of an event.
- ``StreamEventSource`` (ours, additive): the client starts the source with its first message, then
  acknowledges events and may drain or stop the source. Events carry a sequence and at most the
  client's window of them are unacknowledged; the server ends with ``StreamEnd`` and waits for the
  client's half-close, so it knows every event written was read before the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc

from common import tasks
from common.collector import PacedCollector
from common.errors import ConfigError
from common.kinds import (
    END_CANCELLED,
    END_CHANGED,
    END_LOST,
    END_REMOVED,
    END_SHUTDOWN,
    GatewayKind,
    SourceContext,
)
from common.logs import SourceLogger
from common.rpc import eventing_pb2, eventing_pb2_grpc
from common.server import metrics
from common.server.channel import Channel
from common.server.outcome import ShuttingDown
from common.server.session import MAX_GROUP_EVENTS, Session
from common.server.window import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, Window
from common.settings import ServerSettings

_log = logging.getLogger(__name__)

STOP_REASONS = {
    eventing_pb2.STOP_REASON_REMOVED: END_REMOVED,
    eventing_pb2.STOP_REASON_CHANGED: END_CHANGED,
    eventing_pb2.STOP_REASON_SHUTDOWN: END_SHUTDOWN,
}
"""``StopReason`` values as ``SourceContext.end`` values; an unknown reason counts as a shutdown (the
source is expected back), the safer guess for a caller."""


class _ConfigView(Mapping[str, Any]):
    """The running sessions' configs by name, without copying them."""

    def __init__(self, sessions: dict[str, Session]) -> None:
        self._sessions = sessions

    def __getitem__(self, name: str) -> Any:
        return self._sessions[name].config

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)


class EventingServicer(eventing_pb2_grpc.EventingServicer):
    """Serves one gateway kind's event sources over the Eventing service."""

    def __init__(self, kind: GatewayKind[Any], settings: ServerSettings) -> None:
        self._kind = kind
        self._settings = settings
        self._sessions: set[Session] = set()
        self._configs: dict[str, Session] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._source_log = logging.getLogger(f"gateways.{kind.name}")
        self.collector: PacedCollector | None = None
        """Told when sources start and end, when the server paces garbage collection."""
        self.reserved_ports = frozenset({settings.port, settings.ops_port, settings.metrics_port} - {0, -1})
        """Ports no source may take: the gRPC port (set again once bound) and the client's ops port."""

    @property
    def running(self) -> Mapping[str, Any]:
        """The configs of the sources being streamed now, by name (a live, read-only view)."""
        return _ConfigView(self._configs)

    @property
    def held(self) -> int:
        """Events sources have handed over that no stream has written yet."""
        return sum(session.held for session in self._sessions)

    async def wait_idle(self) -> None:
        """Return once no source is running (every stream has ended and its task has stopped)."""
        await self._idle.wait()

    async def _admit(self, request: eventing_pb2.EventSource) -> Any:
        """Validate off the event loop (a pathological config may take long to check), then check clashes
        against the running sources on it."""
        config = await asyncio.to_thread(self._kind.validate, request.name, request.data, request.version)
        self._kind.check_clashes(request.name, config, self.running, self.reserved_ports)
        return config

    async def ValidateEventSource(
        self, request: eventing_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eventing_pb2.ValidEventSource:
        log = SourceLogger(_log, request.name)
        try:
            await self._admit(request)
        except ConfigError as exc:
            log.info("Event source is invalid: %s", exc.reason)
            return eventing_pb2.ValidEventSource(isValid=False, reason=str(exc))
        except Exception as exc:
            log.exception("Validating the event source failed unexpectedly.")
            return eventing_pb2.ValidEventSource(isValid=False, reason=f"validation failed: {exc!r}")
        return eventing_pb2.ValidEventSource(isValid=True)

    async def StartEventSource(
        self, request: eventing_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[eventing_pb2.Event]:
        session = await self._open(request, context, window=None)
        cancelled = True
        sent = metrics.EVENTS_SENT.labels(source=session.name)
        try:
            async for message in session.frames(MAX_GROUP_EVENTS if request.batches else 1):
                if isinstance(message, eventing_pb2.SourceState):
                    continue  # never asked for here: a v0.11 client must not get an event without payload
                yield message
                sent.inc(len(message.batch) or 1)
            cancelled = False
        finally:
            await self._close(session, END_CANCELLED if cancelled else "")
        self._finish(session, context)

    async def StreamEventSource(
        self,
        requests: AsyncIterator[eventing_pb2.StreamControl],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[eventing_pb2.StreamMessage]:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("control") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must carry start")
        start = first.start
        window = Window(
            start.max_unacked_events or DEFAULT_MAX_EVENTS, start.max_unacked_bytes or DEFAULT_MAX_BYTES
        )
        session = await self._open(start.source, context, window=window, acknowledges=start.acknowledges)
        if start.source_state:
            session.watch_state()
        controls = tasks.start(
            self._controls(requests, session), name=f"controls of event source {session.name!r}"
        )
        ended = False
        sent = metrics.EVENTS_SENT.labels(source=session.name)
        metrics.UNACKNOWLEDGED.labels(source=session.name).set_function(lambda: window.outstanding)
        try:
            limit = MAX_GROUP_EVENTS if start.source.batches else 1
            async for message in session.frames(limit):
                if isinstance(message, eventing_pb2.SourceState):
                    yield eventing_pb2.StreamMessage(state=message)
                    continue
                yield eventing_pb2.StreamMessage(event=message)
                sent.inc(len(message.batch) or 1)
            window.close()
            end = session.end()
            yield eventing_pb2.StreamMessage(end=eventing_pb2.StreamEnd(reason=end.details))
            ended = True
            await self._half_closed(controls, session)
        finally:
            await tasks.stop(controls, timeout=1.0, logger=session.log)
            await self._close(session, "" if ended else END_LOST)
        self._finish(session, context)

    async def _open(
        self,
        request: eventing_pb2.EventSource,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        window: Window | None,
        acknowledges: bool = False,
    ) -> Session:
        """Admit ``request`` and start its session; the call is aborted when it cannot start."""
        name = request.name
        log = SourceLogger(_log, name)
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(ShuttingDown()))
        try:
            config = await self._admit(request)
        except ConfigError as exc:
            log.warning("Refusing to start an invalid event source: %s", exc.reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        ctx = SourceContext(
            name=name,
            id=request.id,
            logger=SourceLogger(self._source_log, name),
            acknowledges=acknowledges,
            max_unacked=window.max_events if window is not None else 0,
        )
        session = Session(name, config, Channel(self._settings.stream_buffer), ctx, log, window)
        session.start(self._kind)
        self._sessions.add(session)
        self._configs[name] = session
        metrics.SOURCES_RUNNING.inc()
        metrics.BUFFERED.labels(source=name).set_function(lambda: session.held)
        self._idle.clear()
        if self.collector is not None:
            self.collector.source_started()
        # The RPC's own end ends the session too: grpc.aio does not always close a generator whose call
        # was cancelled just as the server began to stop, and such a session would hold up the shutdown.
        # types-grpcio declares the callback as a concrete class, which no function matches.
        context.add_done_callback(lambda _: self._rpc_done(session))  # type: ignore[arg-type]
        log.info("Event source started.")
        return session

    async def _controls(self, requests: AsyncIterator[eventing_pb2.StreamControl], session: Session) -> None:
        """Apply the client's controls until it half-closes; a half-close before the end stops the
        source (no acknowledgement can follow it)."""
        window = session.window
        assert window is not None
        warned_restart = False
        async for control in requests:
            kind = control.WhichOneof("control")
            if kind == "ack":
                window.release(control.ack.sequences)
                session.acknowledged(control.ack.sequences)
            elif kind == "drain" and not (session.draining or session.halted):
                reason = STOP_REASONS.get(control.drain.reason, END_SHUTDOWN)
                session.log.info("The client asks to drain the event source (%s).", reason)
                session.drain(reason)
            elif kind == "stop" and not session.halted:
                reason = STOP_REASONS.get(control.stop.reason, END_SHUTDOWN)
                session.log.info("The client asks to stop the event source (%s).", reason)
                session.stop(reason)
            elif kind == "start" and not warned_restart:
                warned_restart = True
                session.log.warning("Ignoring a second start on a running stream (and any after it).")
            # else: a repeated drain or stop, or a control this server does not know (a newer
            # client): nothing to do, and nothing to log per message
        if not window.closed:  # closed once the stream ends, or when the source is stopped
            session.log.warning(
                "The client closed its side before the stream ended (a half-close or a lost call); "
                "stopping the source."
            )
            session.stop(END_SHUTDOWN)

    async def _half_closed(self, controls: asyncio.Task[None], session: Session) -> None:
        """Wait for the client to half-close after ``StreamEnd``: then it has read every event."""
        done, _ = await asyncio.wait({controls}, timeout=self._settings.end_timeout)
        if not done:
            session.log.warning(
                "The client did not confirm the end of the stream within %.1fs.", self._settings.end_timeout
            )

    async def _close(self, session: Session, end: str) -> None:
        """After the stream, however it ended (``end``: why it broke off, "" when it ended itself)."""
        code = grpc.StatusCode.CANCELLED if end else session.end().code
        metrics.STREAM_ENDS.labels(code=code.name).inc()
        if end:
            if end == END_CANCELLED:
                session.log.info("The client cancelled the stream; stopping the event source.")
            else:
                session.log.warning("The stream broke before it ended; stopping the event source.")
            session.ctx.end.value = session.ctx.end.value or end
        await session.close(self._settings.stop_timeout)
        if self._forget(session):
            session.log.info("Event source stopped.")

    def _finish(self, session: Session, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        end = session.end()
        session.log.info("Event source ended: %s (%s).", end.details, end.code.name)
        if end.code is not grpc.StatusCode.OK:
            context.set_code(end.code)
            context.set_details(end.details)

    def _rpc_done(self, session: Session) -> None:
        """The RPC has ended; stop a session whose generator was never closed (once its task is done)."""
        if session not in self._sessions:
            return
        lost = END_LOST if session.window is not None else END_CANCELLED
        session.ctx.end.value = session.ctx.end.value or lost
        session.stop(session.ctx.end.value)
        task = session.task
        if task is None or task.done():
            self._settle_ended(session)
            return
        task.add_done_callback(lambda _: self._settle_ended(session))

    def _settle_ended(self, session: Session) -> None:
        task = session.task
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # logged by the task's guard already; retrieved here so asyncio does not warn
        session.fail_unwritten()
        if self._forget(session):
            session.log.info("Event source stopped with its stream.")

    def _forget(self, session: Session) -> bool:
        """Drop a session from the running set; False if it was gone already."""
        if session not in self._sessions:
            return False
        self._sessions.discard(session)
        metrics.SOURCES_RUNNING.dec()
        if self._configs.get(session.name) in (session, None):  # a restarted source keeps its labels
            _forget_labels(session.name)
        if self.collector is not None:
            self.collector.source_ended()
        if self._configs.get(session.name) is session:
            del self._configs[session.name]
        if not self._sessions:
            self._idle.set()
        return True

    def shutdown(self) -> None:
        """Refuse new streams; drain every running one: sources take nothing new (a webhook answers
        503), what they hold is written, and each stream ends UNAVAILABLE, so its client retries."""
        self._stopping = True
        for session in list(self._sessions):
            session.server_stopping = True
            session.drain(END_SHUTDOWN)

    def halt(self) -> int:
        """Stop every session still running (the grace period is over); how many there were."""
        sessions = list(self._sessions)
        for session in sessions:
            session.stop(END_SHUTDOWN)
        return len(sessions)


def _forget_labels(source: str) -> None:
    """Drop a stopped source's per-source gauges (their functions hold its session)."""
    for gauge in (metrics.BUFFERED, metrics.UNACKNOWLEDGED):
        with contextlib.suppress(KeyError):
            gauge.remove(source)
