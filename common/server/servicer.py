"""The Eventing servicer: validates event sources, runs each as a supervised task, streams its events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from common import tasks
from common.collector import PacedCollector
from common.errors import ConfigError
from common.events import NotWritten, SourceEvent
from common.kinds import GatewayKind, SourceContext
from common.logs import SourceLogger
from common.rpc import eventing_pb2, eventing_pb2_grpc
from common.server.channel import Channel, ChannelClosed
from common.server.outcome import ShuttingDown, stream_end
from common.settings import ServerSettings

_log = logging.getLogger(__name__)

MAX_GROUP_EVENTS = 64
"""Events sent in one message to a client that reads batches (``EventSource.batches``)."""
MAX_GROUP_BYTES = 1024 * 1024
"""Encoded bytes grouped into one message (payloads, extensions and all): a quarter of gRPC's default
4 MiB receive limit. A larger event travels alone, as it would to any client."""


@dataclass(eq=False)
class _Session:
    """One running StartEventSource stream."""

    name: str
    config: Any
    channel: Channel[SourceEvent]
    ctx: SourceContext
    task: asyncio.Task[None] | None = field(default=None)
    unsent: list[SourceEvent] = field(default_factory=list)
    """Events taken from the channel but not yet written to the stream."""


def _mark_written(event: SourceEvent) -> None:
    if event.written is not None and not event.written.done():
        event.written.set_result(None)


def _fail_unwritten(events: list[SourceEvent]) -> None:
    for event in events:
        if event.written is not None and not event.written.done():
            event.written.set_exception(
                NotWritten("the event source's stream ended before the event was sent")
            )


def group_end(messages: list[eventing_pb2.Event], start: int, limit: int) -> int:
    """Where the group of messages sent as one, from ``start``, ends (at least one message)."""
    end, size = start + 1, messages[start].ByteSize()
    while end < len(messages) and end - start < limit:
        size += messages[end].ByteSize()
        if size > MAX_GROUP_BYTES:
            break
        end += 1
    return end


class _ConfigView(Mapping[str, Any]):
    """The running sessions' configs by name, without copying them."""

    def __init__(self, sessions: dict[str, _Session]) -> None:
        self._sessions = sessions

    def __getitem__(self, name: str) -> Any:
        return self._sessions[name].config

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)


class EventingServicer(eventing_pb2_grpc.EventingServicer):
    """Serves one gateway kind's event sources over the v0.11 Eventing service."""

    def __init__(self, kind: GatewayKind[Any], settings: ServerSettings) -> None:
        self._kind = kind
        self._settings = settings
        self._sessions: set[_Session] = set()
        self._configs: dict[str, _Session] = {}
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
        name = request.name
        log = SourceLogger(_log, name)
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(ShuttingDown()))
        try:
            config = await self._admit(request)
        except ConfigError as exc:
            log.warning("Refusing to start an invalid event source: %s", exc.reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        ctx = SourceContext(name=name, id=request.id, logger=SourceLogger(self._source_log, name))
        session = _Session(name, config, Channel(self._settings.stream_buffer), ctx)
        session.task = tasks.start(self._pump(ctx, session), name=f"event source {name!r}", logger=log)
        self._sessions.add(session)
        self._configs[name] = session
        self._idle.clear()
        if self.collector is not None:
            self.collector.source_started()
        # The RPC's own end ends the session too: grpc.aio does not always close a generator whose call
        # was cancelled just as the server began to stop, and such a session would hold up the shutdown.
        # types-grpcio declares the callback as a concrete class, which no function matches.
        context.add_done_callback(lambda _: self._rpc_done(session))  # type: ignore[arg-type]
        log.info("Event source started.")
        cancelled = True
        group_limit = MAX_GROUP_EVENTS if request.batches else 1
        try:
            while (batch := await session.channel.receive()) is not None:
                session.unsent = batch
                messages = [event.to_proto(name) for event in batch]
                start = 0
                while start < len(batch):
                    stop = group_end(messages, start, group_limit)
                    if stop - start == 1:
                        yield messages[start]
                    else:
                        yield eventing_pb2.Event(batch=messages[start:stop])
                    for event in batch[start:stop]:
                        _mark_written(event)
                    start = stop
                    session.unsent = batch[stop:]
            cancelled = False
        finally:
            await self._end_session(session, log, cancelled)
        end = stream_end(session.channel.outcome)
        log.info("Event source ended: %s (%s).", end.details, end.code.name)
        if end.code is not grpc.StatusCode.OK:
            context.set_code(end.code)
            context.set_details(end.details)

    async def _pump(self, ctx: SourceContext, session: _Session) -> None:
        """Run the source, handing each event to the stream; close the channel with how it ended."""
        outcome: BaseException | None = None
        try:
            async with contextlib.aclosing(self._kind.run(ctx, session.config)) as events:
                async for event in events:
                    try:
                        await session.channel.send(event)
                    except BaseException:
                        _fail_unwritten([event])  # cancelled while waiting for room: never sent
                        raise
        except ChannelClosed:
            outcome = None  # the stream ended first; the source had nothing more to say
        except asyncio.CancelledError:
            outcome = ShuttingDown() if self._stopping else None
            raise
        except Exception as exc:
            outcome = exc
            raise
        finally:
            session.channel.close(outcome)

    async def _end_session(self, session: _Session, log: SourceLogger, cancelled: bool) -> None:
        if cancelled:
            log.info("The client cancelled the stream; stopping the event source.")
            session.ctx.end.value = session.ctx.end.value or "cancelled"
        session.channel.close(None)
        if session.task is not None:
            await tasks.stop(
                session.task, timeout=self._settings.stop_timeout, logger=log, reason="stream ended"
            )
        _fail_unwritten([*session.unsent, *session.channel.drain()])
        if self._forget(session):
            log.info("Event source stopped.")

    def _rpc_done(self, session: _Session) -> None:
        """The RPC has ended; stop a session whose generator was never closed (once its task is done)."""
        if session not in self._sessions:
            return
        session.ctx.end.value = session.ctx.end.value or "cancelled"
        session.channel.close(None)
        task = session.task
        if task is None or task.done():
            self._settle_ended(session)
            return
        task.add_done_callback(lambda _: self._settle_ended(session))
        task.cancel("the stream has ended")

    def _settle_ended(self, session: _Session) -> None:
        task = session.task
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # logged by the task's guard already; retrieved here so asyncio does not warn
        _fail_unwritten([*session.unsent, *session.channel.drain()])
        if self._forget(session):
            SourceLogger(_log, session.name).info("Event source stopped with its stream.")

    def _forget(self, session: _Session) -> bool:
        """Drop a session from the running set; False if it was gone already."""
        if session not in self._sessions:
            return False
        self._sessions.discard(session)
        if self.collector is not None:
            self.collector.source_ended()
        if self._configs.get(session.name) is session:
            del self._configs[session.name]
        if not self._sessions:
            self._idle.set()
        return True

    def shutdown(self) -> None:
        """Refuse new streams; end every running one with UNAVAILABLE, so its client retries."""
        self._stopping = True
        for session in list(self._sessions):
            session.ctx.end.value = "shutdown"
            session.channel.close(ShuttingDown())
            if session.task is not None:
                session.task.cancel("gateway server is shutting down")
