"""NATS message <-> event: the body as the payload, the rest as CloudEvent attributes. Pure, no I/O.

===========================  =======================================================================
event field                  from the message
===========================  =======================================================================
payload                      the message body, byte for byte (what v0.11 sent)
id                           JetStream: ``<source>:<stream>:<stream sequence>``, the same for every
                             redelivery of one stored message. Core NATS: ``<source>:<Nats-Msg-Id>``
                             when the header is there (printable ASCII, at most 200 characters; the
                             id a JetStream publisher de-duplicates on), else ``<source>:<uuid4>``
time                         JetStream: when the stream stored the message; core: when it arrived
subject                      the message's subject (``eventsubject`` in the CloudEvent, whose
                             ``subject`` is the event-source name), e.g. ``orders.eu.created``
content type                 the ``Content-Type`` header (any case) when it is a valid media type;
                             one that is not becomes ``application/octet-stream``; none without it
extension ``headers``        JSON object: header name (as sent) -> list of values; only when the
                             message has headers
extension ``redelivered``    JetStream: ``true`` when JetStream delivered the message before
extension ``deliverycount``  JetStream: deliveries so far, this one included (``1`` the first time)
===========================  =======================================================================
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from common.events import SourceEvent, media_type

MSG_ID_HEADER = "Nats-Msg-Id"
"""The header a publisher names a message with (JetStream de-duplicates on it)."""
MAX_ID_LENGTH = 200
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class JetStreamMeta:
    """What JetStream says about a message it delivers (from the reply subject)."""

    stream: str
    """The stream that stored it."""
    sequence: int
    """Its stream sequence: one per stored message, whatever the redeliveries."""
    deliveries: int
    """Times it has been delivered, this time included."""
    stored_at: datetime
    """When the stream stored it (aware)."""


@dataclass(frozen=True)
class NatsMessage:
    """One NATS message as a NATS source sees it."""

    subject: str
    """The subject it was published on."""
    data: bytes = b""
    """The body exactly as published."""
    headers: tuple[tuple[str, str], ...] = ()
    """Header fields as (name, value), names as sent."""
    received_at: datetime | None = None
    """When it arrived (aware)."""
    jetstream: JetStreamMeta | None = None
    """Set when it came through a JetStream consumer."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


def event_id(source: str, message: NatsMessage, new_id: Callable[[], str]) -> str:
    """JetStream: ``<source>:<stream>:<sequence>``; else ``<source>:<Nats-Msg-Id>`` or ``<source>:<uuid>``."""
    if message.jetstream is not None:
        return f"{source}:{message.jetstream.stream}:{message.jetstream.sequence}"
    given = (message.header(MSG_ID_HEADER) or "").strip()
    if given and len(given) <= MAX_ID_LENGTH and _PRINTABLE.match(given):
        return f"{source}:{given}"
    return f"{source}:{new_id()}"


def content_type(message: NatsMessage) -> str:
    """The ``Content-Type`` header when it is a valid media type, ``application/octet-stream`` when it
    is not, "" without one."""
    sent = message.header("content-type")
    if sent is None:
        return ""
    return media_type(sent)


def headers_json(headers: tuple[tuple[str, str], ...]) -> str:
    """Compact, ASCII-only JSON of name -> values: it travels in HTTP and NATS headers in binary mode."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    return json.dumps(grouped, separators=(",", ":"), ensure_ascii=True)


def extensions(message: NatsMessage) -> dict[str, str]:
    """The CloudEvent extensions of ``message``: its headers, and JetStream's delivery count."""
    found: dict[str, str] = {}
    if message.headers:
        found["headers"] = headers_json(message.headers)
    if message.jetstream is not None:
        found["redelivered"] = "true" if message.jetstream.deliveries > 1 else "false"
        found["deliverycount"] = str(message.jetstream.deliveries)
    return found


def to_event(
    source: str,
    message: NatsMessage,
    *,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    delivered: asyncio.Future[None] | None = None,
) -> SourceEvent:
    """The event for ``message`` of event source ``source``."""
    meta = message.jetstream
    return SourceEvent(
        payload=message.data,
        id=event_id(source, message, new_id),
        time=meta.stored_at if meta is not None else message.received_at,
        subject=message.subject,
        content_type=content_type(message),
        extensions=extensions(message),
        delivered=delivered,
    )


def from_event(event: SourceEvent) -> NatsMessage:
    """The message an event was made from, as far as the event carries it."""
    ext = event.extensions
    grouped: dict[str, list[str]] = json.loads(ext.get("headers", "{}"))
    headers = tuple((name, value) for name, values in grouped.items() for value in values)
    meta = None
    if "deliverycount" in ext and event.time is not None:
        _, stream, sequence = event.id.rsplit(":", 2)
        meta = JetStreamMeta(stream, int(sequence), int(ext["deliverycount"]), event.time)
    return NatsMessage(
        subject=event.subject,
        data=event.payload,
        headers=headers,
        received_at=event.time if meta is None else None,
        jetstream=meta,
    )
