"""What travels inside the client: an event off a stream, and one encoded for a transport."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from common.rpc import eventing_pb2


class Format(StrEnum):
    """How an event is written for a subscriber."""

    BINARY = "binary"
    """CloudEvents 1.0 binary mode: attributes in headers (``ce-*``), the payload as the body."""
    STRUCTURED = "structured"
    """CloudEvents 1.0 structured mode: one JSON document (``application/cloudevents+json``)."""
    LEGACY = "legacy"
    """The Argo Events v0.11 envelope (CloudEvents 0.1 shape, base64 payload), for v0.11 sensors."""


@dataclass(frozen=True)
class GatewayIdentity:
    """Who is sending: becomes the CloudEvent ``source`` and ``type``."""

    name: str
    """The gateway's name (``--name``, else ``GATEWAY_NAME``, else ``<kind>-gateway``)."""
    kind: str
    """The gateway kind (``calendar``, ``webhook``, ...)."""


class Receipt:
    """One event on its way to every subscriber, settled once each of them is done with it.

    A subscriber settles it when it accepted the event or gave it up by policy (refused, too large, a
    full queue), and abandons it when the client's shutdown cut it off. When the last one reports,
    ``on_done(acknowledge)`` runs once: ``acknowledge`` is False if any subscriber abandoned it, so a
    source that can redeliver keeps it. Until the fan-out says how many subscribers there are, one
    report completes it (the printer, an event dropped before the fan-out).
    """

    __slots__ = ("_acknowledge", "_left", "_on_done")

    def __init__(self, on_done: Callable[[bool], None]) -> None:
        self._left = 1
        self._acknowledge = True
        self._on_done: Callable[[bool], None] | None = on_done

    def expect(self, count: int) -> None:
        """``count`` subscribers will each report once (before any of them has)."""
        self._left = max(count, 1)

    def settle(self) -> None:
        """One subscriber is done with the event: accepted, or given up by policy."""
        self._report(True)

    def abandon(self) -> None:
        """One subscriber gave the event up because the client is stopping."""
        self._report(False)

    @property
    def done(self) -> bool:
        return self._on_done is None

    def _report(self, acknowledge: bool) -> None:
        if self._on_done is None:
            return
        self._acknowledge = self._acknowledge and acknowledge
        self._left -= 1
        if self._left <= 0:
            on_done, self._on_done = self._on_done, None
            on_done(self._acknowledge)


@dataclass(frozen=True)
class ReceivedEvent:
    """One event read off a source's stream."""

    source: str
    """The event-source name (the ConfigMap key)."""
    event: eventing_pb2.Event
    """The event as the server sent it; an old server sends only ``name`` and ``payload``."""
    received_at: datetime
    """When the client read it (aware, UTC): the CloudEvent ``time`` when the server sent none."""
    receipt: Receipt | None = field(default=None, compare=False)
    """Settled by the subscribers; None when nothing waits for the outcome (tests, tools)."""


@dataclass(frozen=True)
class Message:
    """One event encoded for a transport, with what delivery needs to know about it."""

    event_id: str
    """The CloudEvent id (also the JetStream ``Nats-Msg-Id``)."""
    source: str
    """The event-source name, for ordering, metrics and logs."""
    body: bytes
    """The HTTP body or NATS payload."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """HTTP headers (or NATS headers): ``Content-Type`` and, in binary mode, the ``ce-*`` attributes."""
    received_at: float = 0.0
    """``time.monotonic()`` when the client read the event, for the delivery-latency histogram."""
    receipt: Receipt | None = field(default=None, compare=False, repr=False)
    """The event's receipt, shared by its messages for every subscriber."""
    format: Format = Format.BINARY
    """How ``body`` and ``headers`` are written; the NATS transport maps headers by it."""
