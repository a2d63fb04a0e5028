"""A small gateway kind for testing the server base: its config says what the source does.

Config (YAML): ``count`` events (0 = endless), ``every`` seconds apart, then ``end`` with
``complete``, ``unavailable``, ``failed`` or ``crash``. Every started and stopped source is recorded,
so tests can see that a cancelled stream really stopped its source. ``track: true`` gives each event
a ``delivered`` future and records how each ended (as a broker source acknowledges); ``disconnect_at:
N`` reports the connection lost after event N and back ``down_for`` seconds later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

import yaml

from common.errors import ConfigError, SourceFailed, SourceUnavailable
from common.events import SourceEvent
from common.kinds import GatewayKind, SourceContext


@dataclass(frozen=True)
class TickConfig:
    count: int = 0
    every: float = 0.0
    end: str = "complete"
    port: int = 0
    burst: bool = False
    """Yield without giving the event loop a turn between events (events pile up in the channel)."""
    track: bool = False
    disconnect_at: int = -1
    down_for: float = 0.5


ENDS = ("complete", "unavailable", "failed", "crash")


def parse(data: str) -> TickConfig:
    raw = yaml.safe_load(data) or {}
    problems: dict[str, str] = {}
    if not isinstance(raw.get("count", 0), int) or raw.get("count", 0) < 0:
        problems["count"] = "must be a whole number >= 0"
    if raw.get("end", "complete") not in ENDS:
        problems["end"] = f"must be one of {', '.join(ENDS)}"
    if not isinstance(raw.get("every", 0.0), int | float):
        problems["every"] = "must be a number of seconds"
    if problems:
        raise ConfigError(problems)
    fields = ("count", "every", "end", "port", "burst", "track", "disconnect_at", "down_for")
    return TickConfig(**{k: raw[k] for k in fields if k in raw})


@dataclass
class Journal:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    changed: asyncio.Condition | None = None
    outcomes: dict[str, str] = field(default_factory=dict)
    """Event id -> ``delivered`` or the exception's name, for ``track`` sources."""


JOURNAL = Journal()


async def run(ctx: SourceContext, config: TickConfig) -> AsyncGenerator[SourceEvent, None]:
    JOURNAL.started.append(ctx.name)
    try:
        n = 0
        while config.count == 0 or n < config.count:
            delivered = _tracked(f"{ctx.name}:{n}") if config.track else None
            yield SourceEvent(
                payload=f"{ctx.name}-{n}".encode(),
                id=f"{ctx.name}:{n}",
                content_type="text/plain",
                delivered=delivered,
            )
            if n == config.disconnect_at:
                ctx.report_connection(False, "the broker closed the connection")
                asyncio.get_running_loop().call_later(config.down_for, ctx.report_connection, True)
            n += 1
            if not config.burst:
                await asyncio.sleep(config.every)
        if config.end == "unavailable":
            raise SourceUnavailable("the broker went away", source=ctx.name)
        if config.end == "failed":
            raise SourceFailed("the topic was deleted", source=ctx.name)
        if config.end == "crash":
            raise RuntimeError("boom")
    finally:
        JOURNAL.stopped.append(ctx.name)


def _tracked(event_id: str) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def record(done: asyncio.Future[None]) -> None:
        failed = None if done.cancelled() else done.exception()
        JOURNAL.outcomes[event_id] = "delivered" if failed is None else type(failed).__name__

    future.add_done_callback(record)
    return future


def clashes(
    name: str, config: TickConfig, others: Mapping[str, TickConfig], reserved: frozenset[int]
) -> dict[str, str]:
    if config.port in reserved:
        return {"port": f"port {config.port} is reserved for the gateway itself"}
    users = [other for other, cfg in others.items() if config.port and cfg.port == config.port]
    return {"port": f"port {config.port} is already used by event source {users[0]!r}"} if users else {}


TICK: GatewayKind[TickConfig] = GatewayKind(name="tick", parse=parse, run=run, clashes=clashes)
