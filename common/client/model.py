"""What travels inside the client: an event off a stream, and one encoded for a transport."""

from __future__ import annotations

from collections.abc import Mapping
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


@dataclass(frozen=True)
class ReceivedEvent:
    """One event read off a source's stream."""

    source: str
    """The event-source name (the ConfigMap key)."""
    event: eventing_pb2.Event
    """The event as the server sent it; an old server sends only ``name`` and ``payload``."""
    received_at: datetime
    """When the client read it (aware, UTC): the CloudEvent ``time`` when the server sent none."""


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
