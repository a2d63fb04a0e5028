"""MQTT message <-> event: the payload byte for byte, the rest as CloudEvent attributes. Pure, no I/O.

===========================  =======================================================================
event field                  from the message
===========================  =======================================================================
payload                      the message payload, byte for byte (what v0.11 would have sent)
id                           ``<source>:<uuid4>``: MQTT gives a message no identity of its own (a
                             packet id is reused as soon as it is acknowledged), so a message the
                             broker sends again has a new id; ``dup`` says when that may be so
time                         when it arrived
subject                      the topic it was published on (``eventsubject`` in the CloudEvent)
content type                 MQTT 5's Content Type property when it is a valid media type; one that
                             is not becomes ``application/octet-stream``; none without it
extension ``qos``            the QoS it was delivered with (``0``, ``1``, ``2``)
extension ``retain``         ``true`` for a retained message (sent on subscribing), else ``false``
extension ``dup``            ``true`` when the broker says it may have sent it before
extension ``userproperties`` MQTT 5: JSON object of the user properties, name -> list of values; only
                             when it has any
===========================  =======================================================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.events import SourceEvent, media_type


@dataclass(frozen=True)
class MqttMessage:
    """One delivered message as an MQTT source sees it."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    received_at: datetime | None = None


def from_paho(message: Any) -> MqttMessage:
    """The fields of a paho ``MQTTMessage`` that become the event."""
    properties = getattr(message, "properties", None)
    content_type = getattr(properties, "ContentType", None) if properties is not None else None
    users = tuple(getattr(properties, "UserProperty", ()) or ()) if properties is not None else ()
    return MqttMessage(
        topic=message.topic,
        payload=bytes(message.payload),
        qos=message.qos,
        retain=bool(message.retain),
        dup=bool(message.dup),
        content_type=content_type,
        user_properties=tuple((str(k), str(v)) for k, v in users),
        received_at=datetime.now(UTC),
    )


def extensions(message: MqttMessage) -> dict[str, str]:
    found = {
        "qos": str(message.qos),
        "retain": "true" if message.retain else "false",
        "dup": "true" if message.dup else "false",
    }
    if message.user_properties:
        grouped: dict[str, list[str]] = {}
        for name, value in message.user_properties:
            grouped.setdefault(name, []).append(value)
        found["userproperties"] = json.dumps(grouped, separators=(",", ":"), ensure_ascii=True)
    return found


def to_event(
    source: str, message: MqttMessage, *, new_id: Callable[[], str] = lambda: str(uuid.uuid4())
) -> SourceEvent:
    """The event for ``message`` of event source ``source``."""
    return SourceEvent(
        payload=message.payload,
        id=f"{source}:{new_id()}",
        time=message.received_at,
        subject=message.topic,
        content_type=media_type(message.content_type) if message.content_type is not None else "",
        extensions=extensions(message),
    )
