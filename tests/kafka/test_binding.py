"""A Kafka record as an event: its value byte for byte, its place and metadata as attributes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from common.events import UNKNOWN_CONTENT_TYPE
from gateways.kafka.binding import KafkaRecord, to_event


def test_the_value_is_the_payload_and_the_place_of_the_record_its_id() -> None:
    record = KafkaRecord("orders", 2, 41, b"\x00\xffraw", key=b"customer-7", timestamp_ms=1_700_000_000_123)
    event = to_event(record)
    assert event.payload == b"\x00\xffraw"
    assert event.id == "orders/2/41"
    assert event.subject == "orders"
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert dict(event.extensions) == {
        "partition": "2",
        "offset": "41",
        "partitionkey": "customer-7",
        "timestamp": "1700000000123",
    }
    assert event.content_type == ""


def test_a_key_that_is_not_text_travels_in_base64_and_a_tombstone_is_an_empty_payload() -> None:
    event = to_event(KafkaRecord("t", 0, 0, None, key=b"\xff\x00\n"))
    assert event.payload == b""
    assert event.extensions["partitionkeyb64"] == base64.b64encode(b"\xff\x00\n").decode()
    assert "partitionkey" not in event.extensions


def test_headers_keep_every_value_and_binary_ones_are_marked_base64() -> None:
    headers = (("Trace", b"abc"), ("trace", b"def"), ("bin", b"\x80\x81"), ("Trace", b"ghi"))
    event = to_event(KafkaRecord("t", 0, 0, b"x", headers=headers))
    assert json.loads(event.extensions["headers"]) == {
        "Trace": ["abc", "ghi"],
        "trace": ["def"],
        "bin": ["base64:gIE="],
    }
    assert event.extensions["headers"].isascii()


def test_the_content_type_header_becomes_the_media_type_when_it_is_valid() -> None:
    assert to_event(
        KafkaRecord("t", 0, 0, b"{}", headers=(("Content-Type", b"application/json"),))
    ).content_type == ("application/json")
    for bad in (b"not a type", b"\xff/\xfe", b"text/plain\tq=1"):
        event = to_event(KafkaRecord("t", 0, 0, b"x", headers=(("content-type", bad),)))
        assert event.content_type == UNKNOWN_CONTENT_TYPE, bad


def test_a_record_without_a_timestamp_has_no_time() -> None:
    event = to_event(KafkaRecord("t", 0, 5, b"x"))
    assert event.time is None and "timestamp" not in event.extensions
