"""The event-source lifecycle: diff each config snapshot, start the new, stop the removed, restart the
changed, and never touch the unchanged.

Each source has one runner task. It validates first (an invalid source is reported and waits for its
config to change), then streams events to the sink. How the stream ends decides what follows:
OK stays Completed; INVALID_ARGUMENT stays Error until the config changes; any other fault, the
client's own included (an exception in its task), shows as Error and restarts the source with
backoff. A server that is not up yet is waited for with backoff, not crashed on.

Streams go over the control channel (``common.client.stream``) when the server offers it. Ending a
source is staged there: drain (the server writes what the source holds and ends the stream), then,
past ``drain_timeout``, stop (what is not written yet is refused), then cancel. Over v0.11's
``StartEventSource`` cancelling is the only way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from common import retry, tasks
from common.client.config_source import Sources
from common.client.metrics import EVENTS_DROPPED, EVENTS_RECEIVED, SOURCE_CONNECTED
from common.client.model import Receipt, ReceivedEvent
from common.client.status import Phase, StatusBoard
from common.client.stream import ControlledStream, PlainStream, SourceStream, UnackedBound
from common.collector import PacedCollector
from common.configmap import EventSourceSpec
from common.events import rfc3339
from common.kinds import END_CHANGED, END_REMOVED, END_SHUTDOWN
from common.logs import SourceLogger
from common.retry import Backoff
from common.rpc import eventing_pb2

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

_log = logging.getLogger(__name__)

Precheck = Callable[[Sequence[EventSourceSpec], Collection[str]], dict[str, str]]
"""Checks a whole snapshot before anything starts, given the names of the sources running with an
unchanged config (never to be refused): ``{name: reason}`` for each source refused."""

Sink = Callable[[ReceivedEvent], Awaitable[None]]
"""Where each event goes; awaiting it is the back-pressure on the stream."""

HEALTHY_AFTER = 10.0
"""Seconds a stream must run before its restart backoff starts again from the first delay."""
STOP_WAIT = 2.0
"""Seconds a source asked to stop (after its drain took too long) gets before it is cancelled."""


class _Stop(Exception):
    """The runner is done until its config changes (completed, or invalid)."""


@dataclass(eq=False)
class _Runner:
    spec: EventSourceSpec
    task: asyncio.Task[None] | None = None
    stream: SourceStream | None = None
    """The stream being read, while there is one."""
    stopping: str = ""
    """Why the runner is being ended (``removed``, ``changed``, ``shutdown``); ``""`` while it runs."""


class Lifecycle:
    """Runs one task per event source against the server behind ``stub``."""

    def __init__(
        self,
        stub: EventingAsyncStub,
        status: StatusBoard,
        sink: Sink,
        *,
        backoff: Backoff | None = None,
        on_removed: Callable[[str], Awaitable[None]] | None = None,
        precheck: Precheck | None = None,
        collector: PacedCollector | None = None,
        bound: UnackedBound | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        self._stub = stub
        self._collector = collector
        """Told when streams start (and first deliver) and end, so their long-lived state is frozen."""
        self._status = status
        self._sink = sink
        self._backoff = backoff or Backoff(duration=0.5, factor=2.0, jitter=0.2, cap=30.0)
        self._runners: dict[str, _Runner] = {}
        self._on_removed = on_removed
        self._precheck = precheck
        self._refused: dict[str, EventSourceSpec] = {}
        self._reconnected = asyncio.Event()
        self._bound = bound or UnackedBound()
        self._drain_timeout = drain_timeout
        self._controlled: bool | None = None
        """Whether the server offers the control channel; None until a stream has told."""
        self.held = 0
        """Events read off the streams that not every subscriber is done with yet."""
        self.cut_off = 0
        """Events read off a stream that was cancelled before they reached the subscribers' queues."""

    def server_ready(self) -> None:
        """The channel to the server is ready again: sources waiting out a restart delay retry now, and
        the next stream asks the (perhaps upgraded) server for the control channel again."""
        self._reconnected.set()
        self._reconnected = asyncio.Event()
        if self._controlled is False:
            self._controlled = None

    @property
    def sources(self) -> dict[str, EventSourceSpec]:
        return {name: runner.spec for name, runner in self._runners.items()}

    async def apply(self, specs: Sequence[EventSourceSpec]) -> None:
        """Bring the running sources in line with ``specs``, touching only what changed.

        The pre-check refuses sources before anything starts; a source running with an unchanged
        config is never refused, so a newcomer that clashes with it is refused alone. ``specs`` from a
        config snapshot (``Sources``) also set the status board's config entry, including why the last
        good config is kept when the file's current content was refused.
        """
        if isinstance(specs, Sources):
            self._status.config(True, specs.summary, keeping=specs.keeping)
        settled = frozenset(spec.name for spec in specs if self._unchanged(spec))
        refused = await self._prechecked(specs, settled)
        wanted = {spec.name: spec for spec in specs if spec.name not in refused}
        for name in [n for n in self._runners if n not in wanted]:
            await self._stop(name, END_REMOVED, forget=name not in refused)
        for name in [n for n in self._refused if n not in refused]:
            del self._refused[name]
            if name not in wanted:
                self._status.remove(name)
        for spec in specs:
            if spec.name in refused:
                self._refuse(spec, refused[spec.name])
        for name, spec in wanted.items():
            current = self._runners.get(name)
            if current is not None and (current.spec.data, current.spec.version) == (spec.data, spec.version):
                continue
            if current is not None:
                _log.info("Event source %r changed; restarting it.", name, extra={"source": name})
                await self._stop(name, END_CHANGED, forget=False)
            self._start(spec)

    def _unchanged(self, spec: EventSourceSpec) -> bool:
        """Whether ``spec`` is what its runner already runs."""
        runner = self._runners.get(spec.name)
        return runner is not None and (runner.spec.data, runner.spec.version) == (spec.data, spec.version)

    async def _prechecked(self, specs: Sequence[EventSourceSpec], settled: frozenset[str]) -> dict[str, str]:
        """The pre-check's refusals, off the event loop; none when there is no pre-check or it failed
        (the server still validates each source before it starts)."""
        if self._precheck is None:
            return {}
        try:
            return await asyncio.to_thread(self._precheck, specs, settled)
        except Exception:  # noqa: BLE001 - a fault in the pre-check must not end the config watch
            _log.exception("The pre-check of the event sources failed; the server will check each.")
            return {}

    def _refuse(self, spec: EventSourceSpec, reason: str) -> None:
        """A source the pre-check refused: reported, not started, until the config changes. Told again
        for an unchanged source, it is reported again only when the reason changed (the source it
        clashed with was replaced by another)."""
        message = _invalid(reason)
        node = self._status.nodes.get(spec.name)
        if self._refused.get(spec.name) == spec and node is not None and node.message == message:
            return
        self._refused[spec.name] = spec
        self._status.set_phase(spec.name, spec.id, Phase.ERROR, message)
        SourceLogger(_log, spec.name).error(
            "Not starting the event source, as it is not valid: %s", _NAMED.sub("", reason, count=1)
        )

    def _start(self, spec: EventSourceSpec) -> None:
        log = SourceLogger(_log, spec.name)
        self._status.set_phase(spec.name, spec.id, Phase.NEW, "starting")
        runner = _Runner(spec)
        runner.task = tasks.start(self._run(runner, log), name=f"event source {spec.name!r}", logger=log)
        self._runners[spec.name] = runner

    async def _stop(self, name: str, reason: str, *, forget: bool) -> None:
        runner = self._runners.pop(name)
        await self._end([runner], reason)
        if forget:
            _log.info("Event source %r removed.", name, extra={"source": name})
            self._status.remove(name)
            if self._on_removed is not None:
                await self._on_removed(name)

    async def close(self) -> None:
        """End every source in stages: drain, stop, cancel (see the module docstring)."""
        runners = list(self._runners.values())
        self._runners.clear()
        await self._end(runners, END_SHUTDOWN)

    async def _end(self, runners: Sequence[_Runner], reason: str) -> None:
        """Drain ``runners``' sources; stop those still running after ``drain_timeout``; cancel the rest."""
        for runner in runners:
            runner.stopping = reason
            stream = runner.stream
            if stream is not None and stream.controlled:
                stream.drain(reason)
            elif runner.task is not None:
                runner.task.cancel(f"event source {reason}")
        pending = {r.task for r in runners if r.task is not None and not r.task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self._drain_timeout)
        if pending:
            _log.warning(
                "%d event source(s) still draining after %.1fs; stopping them.",
                len(pending),
                self._drain_timeout,
            )
            for runner in runners:
                if runner.task in pending and runner.stream is not None:
                    runner.stream.stop(reason)
            _, pending = await asyncio.wait(pending, timeout=STOP_WAIT)
        for runner in runners:
            if runner.task is not None:
                await tasks.stop(runner.task, timeout=STOP_WAIT, reason=f"event source {reason}")

    async def _run(self, runner: _Runner, log: SourceLogger) -> None:
        spec = runner.spec
        delays = self._backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                await self._validate(spec)
                await self._stream(runner, log)
            except _Stop:
                return
            except grpc.aio.AioRpcError as exc:
                if runner.stopping:
                    return
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED and self._controlled is not False:
                    log.info("The server has no control channel (a v0.11 server); using StartEventSource.")
                    self._controlled = False
                    attempt -= 1
                    continue
                if not self._fault(spec, exc):
                    return
            except Exception as exc:  # a fault in this client, not the source's: shown, then restarted
                if runner.stopping:
                    return
                message = f"event source task failed: {type(exc).__name__}: {exc}"
                self._status.set_phase(spec.name, spec.id, Phase.ERROR, message)
                log.exception("%s", message)
            if runner.stopping:
                return
            if time.monotonic() - started >= HEALTHY_AFTER:
                delays, attempt = self._backoff.delays(), 1
            delay = next(delays)
            log.warning("Event source attempt #%d failed; restarting in %.2fs.", attempt, delay)
            self._status.count_restart(spec.name)
            await retry.sleep(delay, self._reconnected)

    async def _validate(self, spec: EventSourceSpec) -> None:
        verdict = await self._stub.ValidateEventSource(spec.to_proto())
        self._status.connected(True)
        if not verdict.isValid:
            self._status.set_phase(spec.name, spec.id, Phase.ERROR, _invalid(verdict.reason))
            SourceLogger(_log, spec.name).error(
                "Not starting the event source, as it is not valid: %s",
                _NAMED.sub("", verdict.reason, count=1),
            )
            raise _Stop()

    async def _stream(self, runner: _Runner, log: SourceLogger) -> None:
        spec = runner.spec
        request = spec.to_proto()
        request.batches = True  # events ready together arrive in one message (Event.batch)
        stream: SourceStream
        if self._controlled is False:
            stream = PlainStream(self._stub, request)
        else:
            stream = ControlledStream(
                self._stub, request, self._bound, log, on_state=lambda state: self._state(spec, state)
            )
        runner.stream = stream
        received = EVENTS_RECEIVED.labels(source=spec.name)
        try:
            await stream.open()
            if not stream.controlled:  # v0.11's stream says nothing more: open is as good as it gets
                self._running(spec, log)
            self._started()
            first = True
            async for message in stream.messages():
                if first:  # its first event made the source's delivery lanes: long-lived state too
                    self._started()
                    first = False
                    if stream.controlled:
                        self._controlled = True
                        self._running(spec, log)  # a server too old to send its state has one event
                events = message.batch or (message,)
                received.inc(len(events))
                self._status.event(spec.name, len(events))
                handed = 0
                try:
                    for event in events:
                        now = datetime.now(UTC)
                        if not event.id:  # an old server: one id per event, the same for every subscriber
                            event.id = str(uuid.uuid4())
                        if not event.time:
                            event.time = rfc3339(now)
                        receipt = self._receipt(stream, event.sequence)
                        await self._sink(ReceivedEvent(spec.name, event, now, receipt))
                        handed += 1
                except asyncio.CancelledError:
                    self.cut_off += _count_unhanded(spec.name, events[handed:], log)
                    raise
        finally:
            runner.stream = None
            await stream.close()
            if self._collector is not None:
                self._collector.source_ended()
        if runner.stopping:
            log.info("Event source has drained (%s).", runner.stopping)
            raise _Stop()
        self._status.set_phase(spec.name, spec.id, Phase.COMPLETED, "event source has completed")
        log.info("Event source has completed.")
        raise _Stop()

    def _receipt(self, stream: SourceStream, sequence: int) -> Receipt:
        """The receipt of one event: when every subscriber is done with it, it no longer counts as held
        and, unless a shutdown cut it off, the server is told (its window opens by one)."""
        self.held += 1

        def done(acknowledge: bool) -> None:
            self.held -= 1
            if acknowledge and sequence:
                stream.acknowledge(sequence)

        return Receipt(done)

    def _started(self) -> None:
        if self._collector is not None:
            self._collector.source_started()

    def _running(
        self, spec: EventSourceSpec, log: SourceLogger, message: str = "event source is running"
    ) -> None:
        node = self._status.nodes.get(spec.name)
        if (
            node is not None
            and node.id == spec.id
            and node.phase is Phase.RUNNING
            and node.message == message
        ):
            return
        self._status.set_phase(spec.name, spec.id, Phase.RUNNING, message)
        SOURCE_CONNECTED.labels(source=spec.name).set(1)
        log.info("Event source is running.")

    def _state(self, spec: EventSourceSpec, state: eventing_pb2.SourceState) -> None:
        """The server says the source's own connection (to its broker) changed; the stream stays open."""
        if state.connection == eventing_pb2.SourceState.DISCONNECTED:
            SOURCE_CONNECTED.labels(source=spec.name).set(0)
            reason = state.reason or "no reason given"
            self._status.set_phase(spec.name, spec.id, Phase.ERROR, f"disconnected, stream open: {reason}")
        elif state.connection == eventing_pb2.SourceState.CONNECTED:
            again = f" (reconnected {state.reconnects} time(s))" if state.reconnects else ""
            self._running(spec, SourceLogger(_log, spec.name), f"event source is running{again}")

    def _fault(self, spec: EventSourceSpec, exc: grpc.aio.AioRpcError) -> bool:
        """Record a failed call; True when it is worth retrying."""
        code, details = exc.code(), exc.details() or ""
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            self._status.set_phase(spec.name, spec.id, Phase.ERROR, _invalid(details))
            SourceLogger(_log, spec.name).error("Event source refused by the server: %s", details)
            return False
        # One source's UNAVAILABLE (its port taken, a file not mounted yet) is that source's fault:
        # whether the server is reachable is the channel's state, which the client watches.
        SOURCE_CONNECTED.labels(source=spec.name).set(0)
        message = f"stream ended, restarting: {code.name}: {details}"
        self._status.set_phase(spec.name, spec.id, Phase.ERROR, message)
        SourceLogger(_log, spec.name).warning("%s", message)
        return True


def _count_unhanded(source: str, events: Sequence[eventing_pb2.Event], log: SourceLogger) -> int:
    """Events read off a stream that stopped before they reached every subscriber's queue: the server
    counts them as sent, so they are dropped here, counted and logged; how many."""
    if not events:
        return 0
    EVENTS_DROPPED.labels(source=source, subscriber="", reason="shutdown").inc(len(events))
    ids = ", ".join(event.id for event in events[:10]) + (" and more" if len(events) > 10 else "")
    log.warning(
        "Dropped %d event(s) read but not yet queued for subscribers as the source stopped: %s",
        len(events),
        ids,
    )
    return len(events)


_NAMED = re.compile(r"^event source '[^']*' is invalid: ")


def _invalid(reason: str) -> str:
    """A status message for a refused source, said once: the "event source 'x' is invalid: " that a
    server's reason (``ConfigError``) starts with is not repeated."""
    return f"event source is not valid: {_NAMED.sub('', reason, count=1)}"
