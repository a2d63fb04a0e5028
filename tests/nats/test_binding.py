"""NATS message <-> event, pure: ids, time, subject, content type and extensions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common.config_yaml import MAX_EVENT_PAYLOAD_BYTES
from common.events import too_large
from gateways.nats.binding import JetStreamMeta, NatsMessage, from_event, to_event

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_a_core_message_becomes_an_event_with_its_body_byte_for_byte() -> None:
    message = NatsMessage("orders.eu", b"\x00\xff body", received_at=AT)
    event = to_event("orders", message, new_id=lambda: "fresh")
    assert (event.payload, event.id, event.subject, event.time) == (
        b"\x00\xff body",
        "orders:fresh",
        "orders.eu",
        AT,
    )
    assert (event.content_type, dict(event.extensions)) == ("", {})


def test_a_core_message_named_by_its_publisher_keeps_that_name_as_its_id() -> None:
    message = NatsMessage("s", headers=(("Nats-Msg-Id", "order-7"),))
    assert to_event("src", message, new_id=lambda: "fresh").id == "src:order-7"
    unusable = NatsMessage("s", headers=(("Nats-Msg-Id", "has space"),))
    assert to_event("src", unusable, new_id=lambda: "fresh").id == "src:fresh"


def test_a_jetstream_message_is_named_by_its_stream_and_sequence_and_dated_when_stored() -> None:
    meta = JetStreamMeta("ORDERS", 42, 3, AT)
    message = NatsMessage("orders.eu", b"x", headers=(("Nats-Msg-Id", "ignored"),), jetstream=meta)
    event = to_event("orders", message)
    assert (event.id, event.time) == ("orders:ORDERS:42", AT)
    assert event.extensions["redelivered"] == "true"
    assert event.extensions["deliverycount"] == "3"
    first = to_event("orders", NatsMessage("s", jetstream=JetStreamMeta("ORDERS", 1, 1, AT)))
    assert first.extensions["redelivered"] == "false"


@pytest.mark.parametrize(
    ("sent", "content_type"),
    [
        ("application/json", "application/json"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("json", "application/octet-stream"),
        ("text/plain;\tcharset=x", "application/octet-stream"),
    ],
)
def test_the_content_type_header_is_the_content_type_when_it_is_a_media_type(
    sent: str, content_type: str
) -> None:
    message = NatsMessage("s", headers=(("content-TYPE", sent),))
    assert to_event("src", message).content_type == content_type


def test_headers_travel_as_compact_ascii_json() -> None:
    message = NatsMessage("s", headers=(("X-Team", "été"), ("Nats-Msg-Id", "1")))
    text = to_event("src", message).extensions["headers"]
    assert text == '{"X-Team":["\\u00e9t\\u00e9"],"Nats-Msg-Id":["1"]}'
    assert json.loads(text) == {"X-Team": ["été"], "Nats-Msg-Id": ["1"]}


@pytest.mark.parametrize(
    "message",
    [
        NatsMessage("orders.eu", b"body", (("A", "1"), ("B", "2")), AT),
        NatsMessage("orders.eu", b"", jetstream=JetStreamMeta("ORDERS", 9, 2, AT)),
    ],
)
def test_an_event_gives_back_the_message_it_was_made_from(message: NatsMessage) -> None:
    assert from_event(to_event("src", message)) == message


def test_a_message_too_large_for_one_grpc_message_is_told_apart() -> None:
    fits = b"x" * (MAX_EVENT_PAYLOAD_BYTES - 1)  # with its one-letter subject, exactly what fits
    assert not too_large(to_event("src", NatsMessage("s", fits)))
    assert too_large(to_event("src", NatsMessage("s", fits, (("H", "v"),))))
