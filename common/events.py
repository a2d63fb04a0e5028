"""What a source yields: the payload plus the metadata that becomes CloudEvent attributes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from common.config_yaml import MAX_EVENT_PAYLOAD_BYTES
from common.rpc import eventing_pb2

EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
"""CloudEvents 1.0: extension attribute names are lower-case a-z and 0-9, at most 20 characters."""

RESERVED_ATTRIBUTES = frozenset(
    {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time", "data"}
)

HEADER_SAFE_CHARS = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
"""What a ``ce-*`` header value keeps as is (CloudEvents HTTP binding 3.1.3.2, NATS binding 3.1.3.2):
printable ASCII but space, ``"`` and ``%``; everything else is percent-encoded as UTF-8."""
_HEADER_SAFE = re.compile(r"^[!#$&-~]*$")
"""A value made only of ``HEADER_SAFE_CHARS``, which needs no percent-encoding."""


UNKNOWN_CONTENT_TYPE = "application/octet-stream"
"""What a payload without a valid content type is (RFC 9110 8.3: a recipient may assume it)."""
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[ \x21\x23-\x5b\x5d-\x7e]|\\[ \x21-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(?: *; *(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*$")


def media_type(sent: str) -> str:
    """``sent`` (spaces around it dropped) when it is an RFC 9110 8.3.1 ``media-type`` (``type "/"
    subtype``, then ``*( OWS ";" OWS [ parameter ] )``) with spaces only, else
    ``application/octet-stream``: a tab, which HTTP allows, is a control character no CloudEvents
    attribute may hold. For sources whose protocol carries a sender's content type."""
    sent = sent.strip(" ")
    return sent if _MEDIA_TYPE.match(sent) else UNKNOWN_CONTENT_TYPE


def header_value(value: str) -> str:
    """``value`` as a ``ce-*`` header carries it: percent-encoded per the CloudEvents bindings."""
    return value if _HEADER_SAFE.match(value) else quote(value, safe=HEADER_SAFE_CHARS)


def header_bytes(attributes: Mapping[str, str]) -> int:
    """Bytes of ``attributes`` written as ``ce-<name>: <value>`` header lines (with CRLF), as a
    binary-mode subscriber receives them."""
    return sum(len(name) + 7 + len(header_value(value)) for name, value in attributes.items())


class NotWritten(Exception):
    """The stream ended before the event was written to it."""


class NotDelivered(Exception):
    """The stream ended before the client acknowledged the event: the source's broker keeps it (or a
    caller waiting for its answer gets 503)."""


@dataclass(frozen=True)
class SourceEvent:
    """One event from a source. Only ``payload`` is seen by a v0.11 client; the rest is additive."""

    payload: bytes
    """The event body, forwarded byte for byte."""
    id: str = ""
    """Derived from the event's origin, so the same origin event always carries the same id."""
    time: datetime | None = None
    """When the event happened (aware); rendered RFC 3339 with its offset."""
    subject: str = ""
    """What the event is about within its source."""
    content_type: str = ""
    """The media type of ``payload``."""
    extensions: Mapping[str, str] = field(default_factory=dict)
    """CloudEvent extension attributes; a value may be JSON text."""
    written: asyncio.Future[None] | None = field(default=None, compare=False, repr=False)
    """Resolved once the event has been written to the gRPC stream; failed with ``NotWritten`` if the
    stream ends first. For sources that must answer their caller only after the hand-off (webhook)."""

    delivered: asyncio.Future[None] | None = field(default=None, compare=False, repr=False)
    """Resolved once the client has acknowledged the event (every subscriber accepted it, or
    delivery gave it up by policy), or, with a client that does not acknowledge (v0.11), once it is
    written; failed with ``NotDelivered`` if the stream ends first. For sources that acknowledge to
    their broker, or answer their caller, only after delivery."""

    def __post_init__(self) -> None:
        for name in self.extensions:
            if not EXTENSION_NAME.match(name) or name in RESERVED_ATTRIBUTES:
                raise ValueError(f"{name!r} is not a valid CloudEvent extension attribute name")
        if self.time is not None and self.time.tzinfo is None:
            raise ValueError("event time must carry a timezone")

    def to_proto(self, name: str) -> eventing_pb2.Event:
        """The wire form, for the event source ``name``."""
        return eventing_pb2.Event(
            name=name,
            payload=self.payload,
            id=self.id,
            time=rfc3339(self.time) if self.time else "",
            subject=self.subject,
            content_type=self.content_type,
            extensions=dict(self.extensions),
        )


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with the moment's own offset; UTC as ``Z``, as Go prints it."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def too_large(event: SourceEvent) -> bool:
    """Whether ``event`` cannot travel in one gRPC message to the client (4 MiB, with its metadata),
    for sources whose broker may be configured to carry larger messages than that."""
    carried = len(event.payload) + sum(len(v) for v in event.extensions.values()) + len(event.subject)
    return carried > MAX_EVENT_PAYLOAD_BYTES
