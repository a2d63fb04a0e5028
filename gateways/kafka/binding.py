"""Kafka record <-> event: the value as the payload, the rest as CloudEvent attributes. Pure, no I/O.

============================  ======================================================================
event field                   from the record
============================  ======================================================================
payload                       the record value, byte for byte (what v0.11 sent); a tombstone (no
                              value) is an empty payload
id                            ``<topic>/<partition>/<offset>``: one per stored record, the same when
                              it is read again after a restart or a rebalance
time                          the record's timestamp (create or log-append time, as the topic says)
subject                       the topic (``eventsubject`` in the CloudEvent, whose ``subject`` is the
                              event-source name)
content type                  the ``content-type`` header (any case) when it is a valid media type;
                              one that is not becomes ``application/octet-stream``; none without it
extension ``partitionkey``    the record key when it is UTF-8 text (the CloudEvents partitioning
                              extension, as the CloudEvents Kafka binding maps the key)
extension ``partitionkeyb64`` the key in base64 when it is not UTF-8 text
extension ``partition``       the partition number
extension ``offset``          the record's offset in its partition
extension ``timestamp``       the record timestamp, milliseconds since the epoch, as Kafka gives it
extension ``headers``         JSON object: header name -> list of values (UTF-8 text; a value that
                              is not is given as ``base64:<base64>``); only when the record has any
============================  ======================================================================
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from common.events import SourceEvent, media_type

BINARY_PREFIX = "base64:"


@dataclass(frozen=True)
class KafkaRecord:
    """One record as a Kafka source sees it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None = None
    key: bytes | None = None
    timestamp_ms: int = -1
    """Milliseconds since the epoch; -1 when the record has none."""
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


def event_id(record: KafkaRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


def _text(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def content_type(record: KafkaRecord) -> str:
    """The ``content-type`` header when it is a valid media type, ``application/octet-stream`` when
    it is not (or is not text), "" without one."""
    sent = record.header("content-type")
    if sent is None:
        return ""
    return media_type(_text(sent) or "\x00")


def headers_json(headers: tuple[tuple[str, bytes], ...]) -> str:
    """Compact, ASCII-only JSON of name -> values: it travels in HTTP and NATS headers in binary mode."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        text = _text(value)
        shown = text if text is not None else BINARY_PREFIX + base64.b64encode(value).decode()
        grouped.setdefault(name, []).append(shown)
    return json.dumps(grouped, separators=(",", ":"), ensure_ascii=True)


def extensions(record: KafkaRecord) -> dict[str, str]:
    found = {"partition": str(record.partition), "offset": str(record.offset)}
    if record.key is not None:
        key = _text(record.key)
        if key is not None and key.isprintable():
            found["partitionkey"] = key
        else:
            found["partitionkeyb64"] = base64.b64encode(record.key).decode()
    if record.timestamp_ms >= 0:
        found["timestamp"] = str(record.timestamp_ms)
    if record.headers:
        found["headers"] = headers_json(record.headers)
    return found


def to_event(record: KafkaRecord) -> SourceEvent:
    """The event for ``record``."""
    time = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC) if record.timestamp_ms >= 0 else None
    return SourceEvent(
        payload=record.value or b"",
        id=event_id(record),
        time=time,
        subject=record.topic,
        content_type=content_type(record),
        extensions=extensions(record),
    )
