"""The event-source lifecycle: diff each config snapshot, start the new, stop the removed, restart the
changed, and never touch the unchanged.

Each source has one runner task. It validates first (an invalid source is reported and waits for its
config to change), then streams events to the sink. How the stream ends decides what follows:
OK stays Completed; INVALID_ARGUMENT stays Error until the config changes; any other fault restarts
the source with backoff. A server that is not up yet is waited for with backoff, not crashed on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from common import retry, tasks
from common.client.metrics import EVENTS_DROPPED, EVENTS_RECEIVED
from common.client.model import ReceivedEvent
from common.client.status import Phase, StatusBoard
from common.collector import PacedCollector
from common.configmap import EventSourceSpec
from common.events import rfc3339
from common.logs import SourceLogger
from common.retry import Backoff

if TYPE_CHECKING:
    from common.rpc import eventing_pb2
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

_log = logging.getLogger(__name__)

Precheck = Callable[[Sequence[EventSourceSpec]], dict[str, str]]
"""Checks a whole snapshot before anything starts: ``{name: reason}`` for each source refused."""

Sink = Callable[[ReceivedEvent], Awaitable[None]]
"""Where each event goes; awaiting it is the back-pressure on the stream."""

HEALTHY_AFTER = 10.0
"""Seconds a stream must run before its restart backoff starts again from the first delay."""


class _Stop(Exception):
    """The runner is done until its config changes (completed, or invalid)."""


@dataclass
class _Runner:
    spec: EventSourceSpec
    task: asyncio.Task[None]


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

    def server_ready(self) -> None:
        """The channel to the server is ready again: sources waiting out a restart delay retry now."""
        self._reconnected.set()
        self._reconnected = asyncio.Event()

    @property
    def sources(self) -> dict[str, EventSourceSpec]:
        return {name: runner.spec for name, runner in self._runners.items()}

    async def apply(self, specs: Sequence[EventSourceSpec]) -> None:
        """Bring the running sources in line with ``specs``, touching only what changed."""
        refused = await asyncio.to_thread(self._precheck, specs) if self._precheck is not None else {}
        wanted = {spec.name: spec for spec in specs if spec.name not in refused}
        for name in [n for n in self._runners if n not in wanted]:
            await self._stop(name, removed=name not in refused)
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
                await self._stop(name, removed=False)
            self._start(spec)

    def _refuse(self, spec: EventSourceSpec, reason: str) -> None:
        """A source the pre-check refused: reported, not started, until the config changes."""
        if self._refused.get(spec.name) == spec:
            return
        self._refused[spec.name] = spec
        self._status.set_phase(spec.name, spec.id, Phase.ERROR, f"event source is not valid: {reason}")
        SourceLogger(_log, spec.name).error("Event source is invalid; not starting it: %s", reason)

    def _start(self, spec: EventSourceSpec) -> None:
        log = SourceLogger(_log, spec.name)
        self._status.set_phase(spec.name, spec.id, Phase.NEW, "starting")
        task = tasks.start(self._run(spec, log), name=f"event source {spec.name!r}", logger=log)
        self._runners[spec.name] = _Runner(spec, task)

    async def _stop(self, name: str, *, removed: bool) -> None:
        runner = self._runners.pop(name)
        await tasks.stop(runner.task, timeout=10.0, reason="event source removed or changed")
        if removed:
            _log.info("Event source %r removed.", name, extra={"source": name})
            self._status.remove(name)
            if self._on_removed is not None:
                await self._on_removed(name)

    async def close(self) -> None:
        """Stop every source: its stream is cancelled, so no new event is taken."""
        for name in list(self._runners):
            await self._stop(name, removed=False)

    async def _run(self, spec: EventSourceSpec, log: SourceLogger) -> None:
        delays = self._backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                await self._validate(spec)
                await self._stream(spec, log)
            except _Stop:
                return
            except grpc.aio.AioRpcError as exc:
                if not self._fault(spec, exc):
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
            self._status.set_phase(
                spec.name, spec.id, Phase.ERROR, f"event source is not valid: {verdict.reason}"
            )
            SourceLogger(_log, spec.name).error(
                "Event source is invalid; not starting it: %s", verdict.reason
            )
            raise _Stop()

    async def _stream(self, spec: EventSourceSpec, log: SourceLogger) -> None:
        request = spec.to_proto()
        request.batches = True  # events ready together arrive in one message (Event.batch)
        call = self._stub.StartEventSource(request)
        self._status.set_phase(spec.name, spec.id, Phase.RUNNING, "event source is running")
        log.info("Event source is running.")
        received = EVENTS_RECEIVED.labels(source=spec.name)
        self._started()
        first = True
        try:
            async for message in call:
                if first:  # its first event made the source's delivery lanes: long-lived state too
                    self._started()
                    first = False
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
                        await self._sink(ReceivedEvent(spec.name, event, now))
                        handed += 1
                except asyncio.CancelledError:
                    _count_unhanded(spec.name, events[handed:], log)
                    raise
        finally:
            call.cancel()  # an abandoned aio call is never collected, so never cancelled (grpc#43462)
            if self._collector is not None:
                self._collector.source_ended()
        self._status.set_phase(spec.name, spec.id, Phase.COMPLETED, "event source has completed")
        log.info("Event source has completed.")
        raise _Stop()

    def _started(self) -> None:
        if self._collector is not None:
            self._collector.source_started()

    def _fault(self, spec: EventSourceSpec, exc: grpc.aio.AioRpcError) -> bool:
        """Record a failed call; True when it is worth retrying."""
        code, details = exc.code(), exc.details() or ""
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            self._status.set_phase(spec.name, spec.id, Phase.ERROR, f"event source is not valid: {details}")
            SourceLogger(_log, spec.name).error("Event source refused by the server: %s", details)
            return False
        if code is grpc.StatusCode.UNAVAILABLE and "shutting down" not in details:
            self._status.connected(False)
        message = f"event source stream failed: {code.name}: {details}"
        self._status.set_phase(spec.name, spec.id, Phase.ERROR, message)
        SourceLogger(_log, spec.name).warning("%s", message)
        return True


def _count_unhanded(source: str, events: Sequence[eventing_pb2.Event], log: SourceLogger) -> None:
    """Events read off a stream that stopped before they reached every subscriber's queue: the server
    counts them as sent, so they are dropped here, counted and logged."""
    if not events:
        return
    EVENTS_DROPPED.labels(source=source, subscriber="", reason="shutdown").inc(len(events))
    ids = ", ".join(event.id for event in events[:10]) + (" and more" if len(events) > 10 else "")
    log.warning(
        "Dropped %d event(s) read but not yet queued for subscribers as the source stopped: %s",
        len(events),
        ids,
    )
