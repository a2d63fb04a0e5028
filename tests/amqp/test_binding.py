"""An AMQP message as an event: its body byte for byte, its properties as attributes; the rate
limit's fixed periods."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from common.events import UNKNOWN_CONTENT_TYPE
from gateways.amqp.binding import AmqpMessage, to_event
from gateways.amqp.config import RateLimit
from gateways.amqp.reader import Pacer


def test_the_body_is_the_payload_and_the_message_id_makes_the_id() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5)
    message = AmqpMessage(
        b"\x00raw",
        "orders.eu",
        "orders",
        True,
        "m-1",
        stamp,
        "application/json",
        {"a": b"\xff"},
        {"priority": 5},
    )
    event = to_event("src", message, new_id=lambda: "fresh")
    assert (event.payload, event.id, event.subject) == (b"\x00raw", "src:m-1", "orders.eu")
    assert event.time == stamp.replace(tzinfo=UTC)
    assert event.content_type == "application/json"
    assert event.extensions["exchange"] == "orders" and event.extensions["redelivered"] == "true"
    assert json.loads(event.extensions["headers"]) == {"a": "base64:/w=="}
    assert json.loads(event.extensions["properties"]) == {"priority": 5}


def test_without_a_usable_message_id_each_delivery_gets_a_fresh_id_and_an_arrival_time() -> None:
    arrived = datetime(2026, 1, 1, tzinfo=UTC)
    for given in (None, "", "has space", "x" * 201):
        event = to_event(
            "src", AmqpMessage(b"", message_id=given, received_at=arrived), new_id=lambda: "fresh"
        )
        assert event.id == "src:fresh" and event.time == arrived
    assert to_event("s", AmqpMessage(b"x", content_type="not a type")).content_type == UNKNOWN_CONTENT_TYPE
    assert "headers" not in to_event("s", AmqpMessage(b"x")).extensions


def test_the_pacer_lets_through_the_limit_in_each_fixed_period_and_no_more() -> None:
    pacer = Pacer(RateLimit(limit=3, period=2))
    assert [pacer.delay(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.delay(10.5) == 1.5  # the fourth waits for the next period
    assert pacer.delay(12.0) == 0.0
    assert pacer.delay(17.1) == 0.0  # periods stay aligned to the first: 16-18 now
    assert [pacer.delay(17.2) for _ in range(2)] == [0.0, 0.0]
    assert pacer.delay(17.3) == 18.0 - 17.3
