"""AMQP message <-> event: the body as the payload, the rest as CloudEvent attributes. Pure, no I/O.

===========================  =======================================================================
event field                  from the message
===========================  =======================================================================
payload                      the body, byte for byte (what v0.11 sent)
id                           ``<source>:<message_id>`` when the publisher set the ``message_id``
                             property (printable ASCII, at most 200 characters), the same for every
                             redelivery; else ``<source>:<uuid4>``: AMQP gives a message no identity
                             of its own, so a redelivery is a new id (``redelivered`` says so)
time                         the ``timestamp`` property when set, else when it arrived
subject                      the routing key (``eventsubject`` in the CloudEvent)
content type                 the ``content_type`` property when it is a valid media type; one that
                             is not becomes ``application/octet-stream``; none without it
extension ``exchange``       the exchange it was published to (``""``: the default exchange)
extension ``redelivered``    ``true`` when the broker delivered it before (to this or another
                             consumer), else ``false``
extension ``headers``        JSON object of the headers table; only when it has any
extension ``properties``     JSON object of the other basic properties the publisher set
                             (``correlationid``, ``replyto``, ``expiration``, ``type``, ``userid``,
                             ``appid``, ``priority``, ``deliverymode``, ``contentencoding``)
extension ``propertieserror`` why the properties could not be decoded (a timestamp past the year
                             9999, a table nested too deep, a key that is not UTF-8): the message
                             then comes without them (``lenient``)
===========================  =======================================================================
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.events import SourceEvent, media_type

MAX_ID_LENGTH = 200
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class AmqpMessage:
    """One delivered message as an AMQP source sees it."""

    body: bytes
    routing_key: str = ""
    exchange: str = ""
    redelivered: bool = False
    message_id: str | None = None
    timestamp: datetime | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    """The other basic properties that are set, by their CloudEvent-friendly names."""
    received_at: datetime | None = None
    properties_error: str = ""
    """Why the properties could not be decoded (then there are none), else ""."""


def _plain(value: Any) -> Any:
    """A headers-table value as JSON can carry it (bytes as ``base64:...``, times as RFC 3339)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # Decimal and the like


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)


def event_id(source: str, message: AmqpMessage, new_id: Callable[[], str]) -> str:
    given = message.message_id or ""
    if given and len(given) <= MAX_ID_LENGTH and _PRINTABLE.match(given):
        return f"{source}:{given}"
    return f"{source}:{new_id()}"


def extensions(message: AmqpMessage) -> dict[str, str]:
    found = {"exchange": message.exchange, "redelivered": "true" if message.redelivered else "false"}
    if message.headers:
        found["headers"] = _json(message.headers)
    if message.properties:
        found["properties"] = _json(message.properties)
    if message.properties_error:
        found["propertieserror"] = message.properties_error
    return found


def to_event(
    source: str, message: AmqpMessage, *, new_id: Callable[[], str] = lambda: str(uuid.uuid4())
) -> SourceEvent:
    """The event for ``message`` of event source ``source``."""
    stamp = message.timestamp
    if stamp is not None and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return SourceEvent(
        payload=message.body,
        id=event_id(source, message, new_id),
        time=stamp or message.received_at,
        subject=message.routing_key,
        content_type=media_type(message.content_type) if message.content_type is not None else "",
        extensions=extensions(message),
    )
