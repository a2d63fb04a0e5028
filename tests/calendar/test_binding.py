"""Calendar slot -> event: the exact v0.11 payload bytes, the slot-derived id and the metadata."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from common.errors import ConfigError
from gateways.calendar.binding import event_id, payload, to_event
from gateways.calendar.config import parse

NY = ZoneInfo("America/New_York")


def test_the_payload_is_exactly_the_compact_v011_body() -> None:
    slot = datetime(2026, 1, 15, 9, 0, tzinfo=NY)

    body = payload(slot, {"a": 1, "b": [True, None, "x"]})

    assert body == b'{"eventTime":"2026-01-15T09:00:00-05:00","userPayload":{"a":1,"b":[true,null,"x"]}}'


def test_the_event_time_carries_the_zone_offset_of_the_slot_in_summer_too() -> None:
    slot = datetime(2026, 7, 15, 9, 0, tzinfo=NY)

    assert json.loads(payload(slot, None))["eventTime"] == "2026-07-15T09:00:00-04:00"


@pytest.mark.parametrize("zone", [UTC, ZoneInfo("UTC")], ids=["datetime.UTC", "ZoneInfo UTC"])
def test_a_utc_slot_renders_its_event_time_with_z(zone: Any) -> None:
    slot = datetime(2026, 1, 15, 14, 0, tzinfo=zone)

    assert payload(slot, 1) == b'{"eventTime":"2026-01-15T14:00:00Z","userPayload":1}'


def test_a_string_user_payload_is_a_json_string_inside_the_payload() -> None:
    slot = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)

    assert payload(slot, "hello") == b'{"eventTime":"2026-01-15T14:00:00Z","userPayload":"hello"}'
    assert payload(slot, '{"a": 1}') == (b'{"eventTime":"2026-01-15T14:00:00Z","userPayload":"{\\"a\\": 1}"}')


def test_a_non_ascii_user_payload_is_written_as_utf8_not_escaped() -> None:
    slot = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)

    assert payload(slot, "café ☕").endswith('"userPayload":"café ☕"}'.encode())


def test_a_yaml_user_payload_reaches_the_payload_as_the_same_json() -> None:
    config = parse("interval: 1s\nuserPayload:\n  greeting: hi\n  count: 3\n")
    slot = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)

    assert json.loads(payload(slot, config.user_payload))["userPayload"] == {"greeting": "hi", "count": 3}


def test_the_event_id_is_the_source_and_the_slot_instant_in_utc() -> None:
    assert event_id("s", datetime(2026, 1, 15, 9, 0, tzinfo=NY)) == "s:2026-01-15T14:00:00Z"


def test_the_same_instant_read_in_any_zone_gets_the_same_id() -> None:
    in_new_york = datetime(2026, 1, 15, 9, 0, tzinfo=NY)

    assert event_id("s", in_new_york) == event_id("s", in_new_york.astimezone(UTC))
    assert event_id("s", in_new_york) != event_id("other", in_new_york)


def test_the_two_fall_back_fires_at_0130_new_york_have_different_ids_and_offsets() -> None:
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NY, fold=0)
    second = datetime(2026, 11, 1, 1, 30, tzinfo=NY, fold=1)
    assert first.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert second.astimezone(UTC) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)

    events = [to_event("s", slot, None) for slot in (first, second)]

    assert [event.id for event in events] == ["s:2026-11-01T05:30:00Z", "s:2026-11-01T06:30:00Z"]
    assert [json.loads(event.payload)["eventTime"] for event in events] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ]


def test_the_event_is_json_timed_at_its_slot_with_the_payload_and_id() -> None:
    slot = datetime(2026, 11, 1, 1, 30, tzinfo=NY, fold=1)

    event = to_event("s", slot, {"k": "v"})

    assert event.content_type == "application/json"
    assert event.time is slot
    assert event.payload == payload(slot, {"k": "v"})
    assert event.id == event_id("s", slot)
    assert event.subject == ""
    assert dict(event.extensions) == {}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("value", [".nan", ".inf", "[1, -.inf]"])
def test_a_non_finite_user_payload_is_refused_or_still_yields_strict_json(value: str) -> None:
    refused: ConfigError | None = None
    try:
        config = parse(f"interval: 1s\nuserPayload: {value}\n")
    except ConfigError as exc:
        refused = exc
    if refused is not None:
        assert "userPayload" in refused.problems
        return
    assert any(math.isnan(x) or math.isinf(x) for x in _floats(config.user_payload))

    body = payload(datetime(2026, 1, 15, 14, 0, tzinfo=UTC), config.user_payload)

    json.loads(body, parse_constant=_refuse_constant)


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, list):
        return [x for item in value for x in _floats(item)]
    return []
