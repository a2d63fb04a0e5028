"""What a gateway kind supplies, and the registry that finds kinds by name.

A kind is a ``GatewayKind``: a config parser that names every bad field at once, and a source that
yields events until cancelled. Everything else (gRPC, version checks, supervision, shutdown) is the
base's. Kinds are found through the ``gateways.kinds`` entry-point group, so ``common`` never imports
a gateway package.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry

from common.errors import ConfigError
from common.events import SourceEvent
from common.logs import SourceLogger
from common.versions import check_version

C = TypeVar("C")
ENTRY_POINT_GROUP = "gateways.kinds"


END_REMOVED = "removed"
"""The client removed the source from its config: its endpoint goes at once."""
END_CANCELLED = "cancelled"
"""A v0.11 client ended the stream: a deliberate stop or a lost connection (gRPC does not tell them
apart), so it is taken as a stop: the endpoint goes at once."""
END_CHANGED = "changed"
"""The client restarts the source with a new config."""
END_SHUTDOWN = "shutdown"
"""The client or the server is stopping; the source will be started again when one is back."""
END_LOST = "lost"
"""Our client's control channel broke without a stop: the client crashed or its connection dropped.
It will start the source again."""
GONE_AT_ONCE = frozenset({END_REMOVED, END_CANCELLED})
"""Ends after which a source's endpoint should disappear at once; after any other end it should ask
callers to come back (the source is expected to start again)."""


@dataclass
class EndReason:
    """Why a running source is being stopped, set by the server before it drains or cancels the source."""

    value: str = ""
    """``""`` while running, else one of the ``END_*`` values (``removed``, ``cancelled``, ``changed``,
    ``shutdown``, ``lost``)."""


@dataclass
class Connection:
    """A source's connection to what it reads from (its broker), as it last reported it."""

    connected: bool = True
    """True until the source says otherwise: sources without a broker are always connected."""
    reason: str = ""
    """Why it is disconnected, in the broker's or the library's words."""
    reconnects: int = 0
    """Times it came back after a disconnect."""


@dataclass(frozen=True)
class SourceContext:
    """What a running source knows about itself."""

    name: str
    """The event source name (the ConfigMap key)."""
    id: str
    """The event source id the client sent (FNV-32a of key + value)."""
    logger: SourceLogger
    """A logger that tags each record with the source name."""
    end: EndReason = field(default_factory=EndReason)
    """Why the source is being stopped, readable in its ``finally``."""
    drainers: list[Callable[[], None]] = field(default_factory=list)
    """Called when the source is to finish (``on_drain``)."""
    acknowledges: bool = False
    """Whether the client acknowledges events only once delivered (``SourceEvent.delivered`` then
    means every subscriber accepted the event); False for a v0.11 client, where it means written."""
    max_unacked: int = 0
    """The most events the client holds unacknowledged (its window; the source is paused there
    anyway): a source whose library fetches ahead (Kafka) pauses fetching at this many unsettled
    events. 0 with a v0.11 client, which has no window."""
    connection: Connection = field(default_factory=Connection)
    """The source's connection as last reported (``report_connection``)."""
    watchers: list[Callable[[Connection], None]] = field(default_factory=list)
    """Told of every change of ``connection`` (the stream sends it to a client that asked)."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the source serves (``serving``); a client that asks for state is told then, so its
    status says Running only when it is true."""

    def serving(self) -> None:
        """The source is up (a webhook's route answers, a broker subscription is in place). A kind
        with ``says_when_serving`` calls it; for any other the server does as the source starts."""
        if not self.ready.is_set():
            self.ready.set()
            for watcher in self.watchers:
                watcher(self.connection)

    def report_connection(self, connected: bool, reason: str = "") -> None:
        """Say that the source's connection to its broker went down (with the reason) or came back.
        Repeats are ignored; the client shows the state in the source's status within moments."""
        state = self.connection
        if connected == state.connected and (connected or reason == state.reason):
            return
        if connected and not state.connected:
            state.reconnects += 1
        state.connected, state.reason = connected, "" if connected else reason
        level = logging.INFO if connected else logging.WARNING
        self.logger.log(
            level, "Connected again." if connected else "Disconnected: %s", *(() if connected else (reason,))
        )
        for watcher in self.watchers:
            watcher(state)

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Be told when the source should finish rather than be cancelled: take nothing new, yield
        what it already holds (events whose callers wait for their answer), then return. ``end`` says
        why by then. A source that registers nothing holds nothing and is simply cancelled."""
        self.drainers.append(callback)


Clashes = Callable[[str, C, Mapping[str, C], frozenset[int]], dict[str, str]]
"""(name, config, the other sources' configs, reserved ports) -> ``{field: problem}`` for each clash.

Reserved ports are the gateway's own: its gRPC port and the client's ops port."""


@dataclass(frozen=True)
class GatewayKind(Generic[C]):
    """A gateway kind: how to read its config and how to run one source of it."""

    name: str
    """The kind's name: ``calendar``, ``webhook``, ... (``gateway serve <name>``)."""
    parse: Callable[[str], C]
    """Parse and validate the YAML ``data`` of one source; raise ``ConfigError`` naming every bad field."""
    run: Callable[[SourceContext, C], AsyncGenerator[SourceEvent, None]]
    """Yield the source's events until cancelled; raise ``SourceUnavailable`` or ``SourceFailed``."""
    clashes: Clashes[C] | None = None
    """Checks one source against others (shared ports, paths); None when sources never clash."""
    demo: str = ""
    """Event sources (ConfigMap YAML) that ``gateway run`` uses when given none."""
    close: Callable[[], Awaitable[None]] | None = None
    """Releases what the kind shares across sources (a webhook's listening ports) when the server stops."""
    says_when_serving: bool = False
    """Whether the kind calls ``SourceContext.serving`` itself once a source is up (a webhook, once its
    route answers); otherwise a source counts as serving as soon as it starts."""
    listen_on: Callable[[str], None] | None = None
    """Sets the interface the kind's own listeners bind (``--listen-host``); None: it has none."""
    metrics: CollectorRegistry | None = None
    """The kind's own Prometheus metrics, served beside the client's (standalone) or on ``--metrics-port``."""

    def validate(self, name: str, data: str, version: str) -> C:
        """Version check, then parse; every error is attributed to the source ``name``."""
        check_version(version, source=name)
        try:
            return self.parse(data)
        except ConfigError as exc:
            raise exc.for_source(name) from None

    def check_clashes(
        self, name: str, config: C, others: Mapping[str, C], reserved: frozenset[int] = frozenset()
    ) -> None:
        """Raise ``ConfigError`` for ``name`` when it clashes with any of ``others`` or a reserved port."""
        if self.clashes is None:
            return
        problems = self.clashes(name, config, _Without(others, name), reserved)
        if problems:
            raise ConfigError(problems, source=name)


class _Without(Mapping[str, Any]):
    """``mapping`` without ``key``, in constant time (no copy of every running source per check)."""

    def __init__(self, mapping: Mapping[str, Any], key: str) -> None:
        self._mapping = mapping
        self._key = key

    def __getitem__(self, name: str) -> Any:
        if name == self._key:
            raise KeyError(name)
        return self._mapping[name]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._mapping if name != self._key)

    def __len__(self) -> int:
        return len(self._mapping) - (self._key in self._mapping)


class UnknownKindError(LookupError):
    """No installed gateway kind has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown gateway kind {name!r}; installed kinds: {', '.join(known) or 'none'}")


def available_kinds() -> list[str]:
    """The names of every installed gateway kind."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_kind(name: str) -> GatewayKind[Any]:
    """The installed kind called ``name``."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            kind = ep.load()
            if not isinstance(kind, GatewayKind):
                raise TypeError(f"entry point {ep.value} is not a GatewayKind")
            return kind
    raise UnknownKindError(name, available_kinds())


logging.getLogger(__name__).addHandler(logging.NullHandler())
