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
``datacontenttype``    ``event.content_type``; left out when the server sent none. Sent as
                       ``application/octet-stream`` instead: one that is not printable ASCII (no
                       attribute may hold a tab or a line break), a content type
                       naming a CloudEvents format (one containing ``application/cloudevents``, any case),
                       so no payload can pass itself off as a CloudEvent to a subscriber, and a JSON
                       content type on a payload that is not JSON (``common.client.jsontext``), which a
                       subscriber's SDK would fail to parse
``origcontenttype``    the server's content type as sent, when it was relabelled so
``eventsubject``       the server's ``event.subject`` (what the event is about within its source), when
                       non-empty
*extension*            every entry of ``event.extensions``, as given, in name order; a name that is not
                       ``^[a-z0-9]{1,20}$``, or is a context attribute or ``eventsubject``, is skipped
=====================  =====================================================================================

Formats (:func:`encode`; the same body and headers serve HTTP and NATS):

* ``BINARY``: the body is the payload byte for byte; ``Content-Type`` carries ``datacontenttype`` (none when
  it is left out) and every other attribute is a ``ce-<name>`` header, percent-encoded per the
  CloudEvents HTTP binding (3.1.3.2). The NATS transport writes ``datacontenttype`` as
  ``ce-datacontenttype``, as the NATS binding has it.
* ``STRUCTURED``: the body is the JSON event (``application/cloudevents+json; charset=utf-8``). A payload
  with a JSON ``datacontenttype`` (or none, which the JSON format reads as ``application/json``) that is
  RFC 8259 JSON nested at most 64 deep (``common.client.jsontext``) goes in ``data`` as its own text,
  byte for byte; anything else goes in ``data_base64``, as do ``null``, ``false``, ``0`` and ``""``,
  which readers take for "no data", and a lone number beyond a double's range
  (``jsontext.embeddable``); an empty payload gives an event without data.
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

from dateutil.parser import isoparse

from common.client.jsontext import Payload, embeddable
from common.client.model import Format, GatewayIdentity, Message, ReceivedEvent
from common.events import EXTENSION_NAME, RESERVED_ATTRIBUTES, header_value, rfc3339

SPECVERSION = "1.0"
DEFAULT_CONTENT_TYPE = "application/json"
"""What the v0.11 envelope always claims."""
RELABELLED_CONTENT_TYPE = "application/octet-stream"
ORIGINAL_CONTENT_TYPE = "origcontenttype"
"""The extension that keeps a content type relabelled because it named a CloudEvents format."""
CLOUDEVENTS_MEDIA = "application/cloudevents"
EVENT_SUBJECT = "eventsubject"
"""The extension that carries the server's ``event.subject`` (``subject`` itself names the event source)."""

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
LEGACY_EVENT_TYPE_VERSION = "v0.10"
"""v0.11 stamped every event with ``ArgoEventsGatewayVersion``, which it never moved past ``v0.10``."""
LEGACY_CLOUDEVENTS_VERSION = "0.1"

_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]+$")
_JSON_MEDIA = re.compile(r"^\s*(application|text)/([a-z0-9!#$&^_.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)
"""A JSON media type (``application/json``, ``text/json``, ``application/x+json``), parameters allowed."""


def to_attributes(received: ReceivedEvent, gateway: GatewayIdentity) -> dict[str, str]:
    """The CloudEvents 1.0 context and extension attributes of ``received``, as the module table lays out."""
    return _attributes(received, gateway, Payload(received.event.payload))


def _attributes(received: ReceivedEvent, gateway: GatewayIdentity, payload: Payload) -> dict[str, str]:
    event = received.event
    attributes = {
        "specversion": SPECVERSION,
        "id": event.id or str(uuid.uuid4()),
        "source": gateway.name,
        "type": gateway.kind,
        "subject": received.source,
        "time": _event_time(event.time, received.received_at),
    }
    sent = event.content_type
    if not _PRINTABLE_ASCII.match(sent):
        if sent:  # sent, but no attribute can hold it (a tab, a line break): say only "bytes"
            attributes["datacontenttype"] = RELABELLED_CONTENT_TYPE
    elif CLOUDEVENTS_MEDIA in sent.lower() or (_JSON_MEDIA.match(sent) and not _is_json(payload)):
        attributes["datacontenttype"] = RELABELLED_CONTENT_TYPE
    else:
        attributes["datacontenttype"] = sent
    if event.subject:
        attributes[EVENT_SUBJECT] = event.subject
    attributes.update(_extensions(dict(event.extensions)))
    relabelled = attributes.get("datacontenttype") == RELABELLED_CONTENT_TYPE != sent
    if relabelled and _PRINTABLE_ASCII.match(sent):
        attributes[ORIGINAL_CONTENT_TYPE] = sent
    return attributes


def encode(
    received: ReceivedEvent,
    gateway: GatewayIdentity,
    fmt: Format,
    *,
    received_monotonic: float = 0.0,
    payload: Payload | None = None,
) -> Message:
    """``received`` written in ``fmt``, as an HTTP body and headers (also a NATS payload and headers);
    ``payload`` is ``received``'s, shared by its formats so its JSON text is looked for once."""
    payload = payload or Payload(received.event.payload)
    attributes = _attributes(received, gateway, payload)
    body, headers = _ENCODERS[fmt](attributes, payload)
    return Message(
        event_id=attributes["id"],
        source=received.source,
        body=body,
        headers=headers,
        received_at=received_monotonic,
        receipt=received.receipt,
        format=fmt,
    )


def reads_json(received: ReceivedEvent) -> bool:
    """Whether encoding ``received`` may look for its payload's JSON text (a JSON content type, or
    none, which structured mode reads as JSON)."""
    sent = received.event.content_type
    return not sent or _JSON_MEDIA.match(sent) is not None


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


def _is_json(payload: Payload) -> bool:
    """Whether a payload labelled JSON is JSON as ``common.client.jsontext`` judges it (empty counts:
    there is no data to misread)."""
    return not payload.data or payload.json is not None


def _extensions(sent: dict[str, str]) -> dict[str, str]:
    """The server's extensions whose names CloudEvents 1.0 allows and that collide with nothing, by name."""
    taken = RESERVED_ATTRIBUTES | {"specversion", EVENT_SUBJECT, ORIGINAL_CONTENT_TYPE}
    return {name: sent[name] for name in sorted(sent) if EXTENSION_NAME.match(name) and name not in taken}


def _binary(attributes: dict[str, str], payload: Payload) -> tuple[bytes, dict[str, str]]:
    """Binary mode: the payload as the body, unchanged; ``Content-Type`` and ``ce-*`` headers.

    Written here rather than through an SDK's binding, which builds and validates an event and
    percent-encodes every value, for a third of the CPU of an event's delivery; tests read the
    result with an independent CloudEvents implementation.
    """
    headers = {}
    for name, value in attributes.items():
        if name == "datacontenttype":
            headers["Content-Type"] = value
        else:
            headers[f"ce-{name}"] = header_value(value)
    return payload.data, headers


def _structured(attributes: dict[str, str], payload: Payload) -> tuple[bytes, dict[str, str]]:
    """Structured mode: the JSON format, the payload embedded as its own text when it is JSON."""
    head = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))
    if not payload.data:
        body = head
    else:
        content_type = attributes.get("datacontenttype")
        text = payload.json if content_type is None or _JSON_MEDIA.match(content_type) else None
        if text is not None and embeddable(text):
            body = f'{head[:-1]},"data":{text}}}'
        else:
            body = f'{head[:-1]},"data_base64":"{base64.b64encode(payload.data).decode("ascii")}"}}'
    return body.encode("utf-8"), {"Content-Type": STRUCTURED_CONTENT_TYPE}


def _legacy(attributes: dict[str, str], payload: Payload) -> tuple[bytes, dict[str, str]]:
    """Legacy mode: the v0.11 envelope, compact, as v0.11 posted it."""
    body = json.dumps(_legacy_envelope(attributes, payload.data), separators=(",", ":")).encode()
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


_ENCODERS: dict[Format, Callable[[dict[str, str], Payload], tuple[bytes, dict[str, str]]]] = {
    Format.BINARY: _binary,
    Format.STRUCTURED: _structured,
    Format.LEGACY: _legacy,
}
