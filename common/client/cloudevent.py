"""Turn an event read off a gateway server's stream into what a subscriber receives (pure: no I/O).

CloudEvents 1.0 context attributes (:func:`to_attributes`):

=====================  =====================================================================================
attribute              value
=====================  =====================================================================================
``specversion``        ``"1.0"``
``id``                 ``event.id`` when the server sent one, else a fresh ``uuid4()`` string
``source``             the gateway name (``GatewayIdentity.name``)
``type``               the gateway kind (``GatewayIdentity.kind``, e.g. ``"calendar"``)
``subject``            the event-source name (``ReceivedEvent.source``, the ConfigMap key)
``time``               ``event.time`` when the server sent one (parsed and re-rendered RFC 3339 with its own
                       offset, UTC as ``Z``, at most microseconds), else the receive time in UTC; a time that
                       does not parse or carries no offset counts as not sent
``datacontenttype``    ``event.content_type``, else ``"application/json"`` (what v0.11 always claimed); a
                       content type that is not printable ASCII counts as not sent
``eventsubject``       the server's ``event.subject`` (what the event is about within its source), when
                       non-empty
*extension*            every entry of ``event.extensions``, as given, in name order; a name that is not
                       ``^[a-z0-9]{1,20}$``, or is a context attribute or ``eventsubject``, is skipped
=====================  =====================================================================================

Formats (:func:`encode`; the same body and headers serve HTTP and NATS):

* ``BINARY``: the body is the payload byte for byte; ``Content-Type`` carries ``datacontenttype`` and every
  other attribute is a ``ce-<name>`` header, percent-encoded per the CloudEvents HTTP binding (3.1.3.2).
* ``STRUCTURED``: the body is the JSON event (``application/cloudevents+json; charset=utf-8``). A JSON payload
  (a JSON ``datacontenttype`` and bytes that parse as UTF-8 JSON) goes in ``data`` as JSON, anything else in
  ``data_base64``; an empty payload gives an event without data.
* ``LEGACY``: the body is the Argo Events v0.11 envelope (:func:`legacy_envelope`) as compact JSON,
  with ``Content-Type: application/json``; a v0.11 sensor decodes it unchanged.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cloudevents.core.bindings.http import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from common.client.model import Format, GatewayIdentity, Message, ReceivedEvent
from common.events import EXTENSION_NAME, RESERVED_ATTRIBUTES, rfc3339

SPECVERSION = "1.0"
DEFAULT_CONTENT_TYPE = "application/json"
EVENT_SUBJECT = "eventsubject"
"""The extension that carries the server's ``event.subject`` (``subject`` itself names the event source)."""

STRUCTURED_CONTENT_TYPE = f"{JSONFormat.CONTENT_TYPE}; charset=utf-8"
LEGACY_EVENT_TYPE_VERSION = "v0.10"
"""v0.11 stamped every event with ``ArgoEventsGatewayVersion``, which it never moved past ``v0.10``."""
LEGACY_CLOUDEVENTS_VERSION = "0.1"

_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")
_HEADER_SAFE_CHARS = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
"""What a ``ce-*`` header value keeps as is (HTTP binding 3.1.3.2): printable ASCII but space, `"`, `%`."""
_HEADER_SAFE = re.compile(r"^[!#$&-~]*$")
"""A value made only of ``_HEADER_SAFE_CHARS``, which needs no percent-encoding."""
_JSON_FORMAT = JSONFormat()


def to_attributes(received: ReceivedEvent, gateway: GatewayIdentity) -> dict[str, str]:
    """The CloudEvents 1.0 context and extension attributes of ``received``, as the module table lays out."""
    event = received.event
    attributes = {
        "specversion": SPECVERSION,
        "id": event.id or str(uuid.uuid4()),
        "source": gateway.name,
        "type": gateway.kind,
        "subject": received.source,
        "time": _event_time(event.time, received.received_at),
        "datacontenttype": _content_type(event.content_type),
    }
    if event.subject:
        attributes[EVENT_SUBJECT] = event.subject
    attributes.update(_extensions(dict(event.extensions)))
    return attributes


def encode(
    received: ReceivedEvent, gateway: GatewayIdentity, fmt: Format, *, received_monotonic: float = 0.0
) -> Message:
    """``received`` written in ``fmt``, as an HTTP body and headers (also a NATS payload and headers)."""
    attributes = to_attributes(received, gateway)
    body, headers = _ENCODERS[fmt](attributes, received.event.payload)
    return Message(
        event_id=attributes["id"],
        source=received.source,
        body=body,
        headers=headers,
        received_at=received_monotonic,
        receipt=received.receipt,
    )


def legacy_envelope(received: ReceivedEvent, gateway: GatewayIdentity) -> dict[str, Any]:
    """The Argo Events v0.11 envelope (``apicommon.Event``): a CloudEvents 0.1 context, a base64 payload."""
    return _legacy_envelope(to_attributes(received, gateway), received.event.payload)


def _event_time(sent: str, received_at: datetime) -> str:
    """The server's time when it sent a usable one, else the receive time in UTC."""
    moment = _parse_time(sent)
    if moment is None:
        moment = (
            received_at.replace(tzinfo=UTC) if received_at.tzinfo is None else received_at.astimezone(UTC)
        )
    return rfc3339(moment)


def _parse_time(text: str) -> datetime | None:
    """``text`` as an aware datetime, or None when it is empty, unparseable or has no offset."""
    if not text:
        return None
    try:
        moment = _isoparse(text)
    except (ValueError, OverflowError):
        return None
    return moment if moment.tzinfo is not None else None


def _isoparse(text: str) -> datetime:
    """The C parser for the usual RFC 3339 forms (cheap per event), dateutil for the rest."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return isoparse(text)


def _content_type(sent: str) -> str:
    """The server's content type when it fits in a header, else what v0.11 always claimed."""
    return sent if _PRINTABLE_ASCII.match(sent) else DEFAULT_CONTENT_TYPE


def _extensions(sent: dict[str, str]) -> dict[str, str]:
    """The server's extensions whose names CloudEvents 1.0 allows and that collide with nothing, by name."""
    taken = RESERVED_ATTRIBUTES | {"specversion", EVENT_SUBJECT}
    return {name: sent[name] for name in sorted(sent) if EXTENSION_NAME.match(name) and name not in taken}


def _sdk_event(attributes: dict[str, str], data: Any) -> CloudEvent:
    """The SDK's event for ``attributes`` (it wants ``time`` as a datetime) carrying ``data``."""
    return CloudEvent({**attributes, "time": _isoparse(attributes["time"])}, data)


def _binary(attributes: dict[str, str], payload: bytes) -> tuple[bytes, dict[str, str]]:
    """Binary mode: the payload as the body, unchanged; ``Content-Type`` and ``ce-*`` headers.

    Written here rather than through the SDK's ``to_binary``, which builds and validates an event and
    percent-encodes every value, for a third of the CPU of an event's delivery; a test holds the two
    to the same output.
    """
    headers = {"Content-Type": attributes["datacontenttype"]}
    for name, value in attributes.items():
        if name != "datacontenttype":
            headers[f"ce-{name}"] = (
                value if _HEADER_SAFE.match(value) else quote(value, safe=_HEADER_SAFE_CHARS)
            )
    return payload, headers


def _structured(attributes: dict[str, str], payload: bytes) -> tuple[bytes, dict[str, str]]:
    """Structured mode: the SDK's JSON format, with the charset spelled out."""
    data = _structured_data(payload, attributes["datacontenttype"])
    body = to_structured(_sdk_event(attributes, data), _JSON_FORMAT).body
    return body, {"Content-Type": STRUCTURED_CONTENT_TYPE}


def _structured_data(payload: bytes, content_type: str) -> Any:
    """The payload as a JSON value when it is JSON, else the bytes (which the SDK writes as ``data_base64``).

    A JSON ``null`` stays bytes: the SDK would read ``"data": null`` as no data at all.
    """
    if not payload:
        return None
    if not JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(content_type):
        return payload
    value = _parse_json(payload)
    return payload if value is None else value


def _parse_json(payload: bytes) -> Any:
    """``payload`` as strict UTF-8 JSON (no BOM, no ``NaN``/``Infinity``), or None when it is not."""
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def _reject_constant(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: Python reads them, but they are not JSON."""
    raise ValueError(f"{name} is not JSON")


def _legacy(attributes: dict[str, str], payload: bytes) -> tuple[bytes, dict[str, str]]:
    """Legacy mode: the v0.11 envelope, compact, as v0.11 posted it."""
    body = json.dumps(_legacy_envelope(attributes, payload), separators=(",", ":")).encode()
    return body, {"Content-Type": DEFAULT_CONTENT_TYPE}


def _legacy_envelope(attributes: dict[str, str], payload: bytes) -> dict[str, Any]:
    """``apicommon.Event`` in its Go field order; ``extensions`` is left out (``omitempty``, never set)."""
    return {
        "context": {
            "eventType": attributes["type"],
            "eventTypeVersion": LEGACY_EVENT_TYPE_VERSION,
            "cloudEventsVersion": LEGACY_CLOUDEVENTS_VERSION,
            "source": _legacy_source(f"{attributes['source']}:{attributes['subject']}"),
            "eventID": attributes["id"],
            "eventTime": _micro_time(attributes["time"]),
            "schemaURL": None,
            "contentType": DEFAULT_CONTENT_TYPE,
        },
        "payload": base64.b64encode(payload).decode("ascii"),
    }


def _legacy_source(host: str) -> dict[str, Any]:
    """v0.11's ``URI`` struct with only ``host`` set; ``port`` is a Go ``int32``, so ``0``."""
    return {
        "scheme": "",
        "user": "",
        "password": "",
        "host": host,
        "port": 0,
        "path": "",
        "query": "",
        "fragment": "",
    }


def _micro_time(text: str) -> str:
    """``text`` in UTC as Kubernetes ``MicroTime`` serialises: RFC 3339 with exactly six fractional digits."""
    moment = isoparse(text).astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_ENCODERS: dict[Format, Callable[[dict[str, str], bytes], tuple[bytes, dict[str, str]]]] = {
    Format.BINARY: _binary,
    Format.STRUCTURED: _structured,
    Format.LEGACY: _legacy,
}
