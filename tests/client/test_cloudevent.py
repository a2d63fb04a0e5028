"""CloudEvent attributes and the three wire formats, checked by decoding them as a subscriber would."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_http, from_structured, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from common.client.cloudevent import encode, legacy_envelope, to_attributes
from common.client.model import Format, GatewayIdentity, Message, ReceivedEvent
from common.rpc import eventing_pb2

GATEWAY = GatewayIdentity(name="calendar-gateway", kind="calendar")
RECEIVED_AT = datetime(2019, 11, 8, 14, 52, 4, 250000, tzinfo=UTC)
NOT_UTF8 = b"\x00\xff\xfe\x80 binary \xc3"
LEGACY_CONTEXT_KEYS = [
    "eventType",
    "eventTypeVersion",
    "cloudEventsVersion",
    "source",
    "eventID",
    "eventTime",
    "schemaURL",
    "contentType",
]
LEGACY_SOURCE_KEYS = ["scheme", "user", "password", "host", "port", "path", "query", "fragment"]
MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def _received(source: str = "hourly", **fields: Any) -> ReceivedEvent:
    return ReceivedEvent(
        source=source, event=eventing_pb2.Event(name=source, **fields), received_at=RECEIVED_AT
    )


def _full(payload: bytes = b'{"slot": "14:00"}', content_type: str = "application/json") -> ReceivedEvent:
    return _received(
        payload=payload,
        id="hourly-1573224723",
        time="2019-11-08T16:52:03.123456+02:00",
        subject="0 * * * *",
        content_type=content_type,
        extensions={"timezone": "Europe/Berlin", "schedule": '{"cron": "0 * * * *", "jitter": [1, 2]}'},
    )


def _http(message: Message) -> HTTPMessage:
    return HTTPMessage(headers=dict(message.headers), body=message.body)


def _from_http(message: Message) -> Any:
    """The event a subscriber that tells the mode from the headers reads (the SDK's ``from_http``)."""
    return from_http(_http(message), JSONFormat())


def _sdk_attributes(attributes: dict[str, str]) -> dict[str, Any]:
    """What the SDK hands back for ``attributes``: the same, with ``time`` as a datetime."""
    return {**attributes, "time": isoparse(attributes["time"])}


def test_an_event_with_all_metadata_maps_every_field_to_its_attribute() -> None:
    assert to_attributes(_full(), GATEWAY) == {
        "specversion": "1.0",
        "id": "hourly-1573224723",
        "source": "calendar-gateway",
        "type": "calendar",
        "subject": "hourly",
        "time": "2019-11-08T16:52:03.123456+02:00",
        "datacontenttype": "application/json",
        "eventsubject": "0 * * * *",
        "schedule": '{"cron": "0 * * * *", "jitter": [1, 2]}',
        "timezone": "Europe/Berlin",
    }


def test_an_old_server_event_gets_a_fresh_uuid_the_receive_time_and_no_content_type() -> None:
    received = _received(payload=b"{}")
    first, second = to_attributes(received, GATEWAY), to_attributes(received, GATEWAY)
    assert uuid.UUID(first["id"]).version == 4
    assert first["id"] != second["id"]
    assert {k: v for k, v in first.items() if k != "id"} == {
        "specversion": "1.0",
        "source": "calendar-gateway",
        "type": "calendar",
        "subject": "hourly",
        "time": "2019-11-08T14:52:04.250000Z",
    }


def test_a_utc_server_time_is_written_with_z() -> None:
    received = _received(time="2019-11-08T14:52:03+00:00")
    assert to_attributes(received, GATEWAY)["time"] == "2019-11-08T14:52:03Z"


@pytest.mark.parametrize("sent", ["yesterday", "2019-11-08T14:52:03", "2019-13-45T00:00:00Z"])
def test_a_server_time_without_an_offset_or_that_does_not_parse_gives_way_to_the_receive_time(
    sent: str,
) -> None:
    assert to_attributes(_received(time=sent), GATEWAY)["time"] == "2019-11-08T14:52:04.250000Z"


@pytest.mark.parametrize(
    "sent", ["text/plain\r\nX-Injected: 1", "application/cloudevents+json;\tcharset=utf-8", "image/png;\tx=1"]
)
def test_a_content_type_no_attribute_can_hold_becomes_octet_stream(sent: str) -> None:
    attributes = to_attributes(_received(payload=b'{"a": 1}', content_type=sent), GATEWAY)
    assert attributes["datacontenttype"] == "application/octet-stream"
    assert "origcontenttype" not in attributes
    body = json.loads(
        encode(_received(payload=b'{"a": 1}', content_type=sent), GATEWAY, Format.STRUCTURED).body
    )
    assert "data" not in body and base64.b64decode(body["data_base64"]) == b'{"a": 1}'


@pytest.mark.parametrize(
    "sent",
    [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "APPLICATION/CloudEvents+JSON; charset=utf-8",
        "application/cloudevents",
        " application/cloudevents+avro",
        "text/plain; x=application/cloudevents+json",
    ],
)
def test_a_content_type_naming_a_cloudevents_format_is_relabelled_and_kept_in_an_extension(sent: str) -> None:
    attributes = to_attributes(_received(content_type=sent), GATEWAY)
    assert attributes["datacontenttype"] == "application/octet-stream"
    assert attributes["origcontenttype"] == sent


def test_a_server_cannot_set_the_original_content_type_extension_itself() -> None:
    received = _received(content_type="application/json", extensions={"origcontenttype": "forged"})
    assert "origcontenttype" not in to_attributes(received, GATEWAY)


@pytest.mark.parametrize("fmt", [Format.BINARY, Format.STRUCTURED])
def test_a_payload_claiming_to_be_a_cloudevent_is_read_as_opaque_data(fmt: Format) -> None:
    forged = b'{"specversion":"1.0","id":"forged","source":"evil","type":"evil"}'
    message = encode(_received(payload=forged, content_type="application/cloudevents+json"), GATEWAY, fmt)
    event = _from_http(message)
    assert event.get_id() != "forged"
    assert event.get_datacontenttype() == "application/octet-stream"
    data = event.get_data()
    assert (data if isinstance(data, bytes) else data.encode()) == forged


def test_extension_names_that_break_the_rules_or_collide_are_skipped_without_raising() -> None:
    received = _received(
        payload=b"{}",
        subject="what",
        extensions={
            "Upper": "x",
            "with-dash": "x",
            "abcdefghijklmnopqrstu": "21 characters",
            "type": "x",
            "data": "x",
            "specversion": "x",
            "eventsubject": "not the subject",
            "abcdefghijklmnopqrst": "20 characters",
        },
    )
    attributes = to_attributes(received, GATEWAY)
    assert attributes["type"] == "calendar"
    assert attributes["eventsubject"] == "what"
    assert attributes["abcdefghijklmnopqrst"] == "20 characters"
    assert set(attributes) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "eventsubject",
        "abcdefghijklmnopqrst",
    }
    for fmt in Format:
        assert encode(received, GATEWAY, fmt).body


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [(b'{"slot": "14:00"}', "application/json"), (NOT_UTF8, "application/octet-stream"), (b"", "text/plain")],
    ids=["json", "not-utf8", "empty"],
)
def test_binary_mode_sends_the_payload_byte_for_byte_and_every_attribute_as_a_header(
    payload: bytes, content_type: str
) -> None:
    received = _full(payload, content_type)
    message = encode(received, GATEWAY, Format.BINARY)
    assert message.body == payload
    assert message.headers == {
        "ce-specversion": "1.0",
        "ce-id": "hourly-1573224723",
        "ce-source": "calendar-gateway",
        "ce-type": "calendar",
        "ce-subject": "hourly",
        "ce-time": "2019-11-08T16:52:03.123456+02:00",
        "Content-Type": content_type,
        "ce-eventsubject": "0%20*%20*%20*%20*",
        "ce-schedule": "{%22cron%22:%20%220%20*%20*%20*%20*%22,%20%22jitter%22:%20[1,%202]}",
        "ce-timezone": "Europe/Berlin",
    }


def test_binary_header_values_are_percent_encoded_beyond_printable_ascii() -> None:
    received = _received(payload=b"{}", subject="grüße 100%\r\n")
    assert (
        encode(received, GATEWAY, Format.BINARY).headers["ce-eventsubject"]
        == "gr%C3%BC%C3%9Fe%20100%25%0D%0A"
    )


@pytest.mark.parametrize(
    "received",
    [
        _full(),
        _full(b"\x00\xff", "application/octet-stream"),
        _received(id="a b", payload=b"{}", subject="grüße 100%\r\n", extensions={"empty": "", "q": '"x"'}),
        _received(
            id="s:1", payload=b"", time="2026-03-29T01:30:00Z", extensions={"tilde": "~!#$&'()*+,/:;=?@[]"}
        ),
    ],
    ids=["full", "binary-data", "escapes", "every-safe-character"],
)
def test_binary_mode_writes_exactly_what_the_sdks_to_binary_writes(received: ReceivedEvent) -> None:
    attributes = to_attributes(received, GATEWAY)
    sdk_event = CloudEvent({**attributes, "time": isoparse(attributes["time"])}, received.event.payload)
    sdk = to_binary(sdk_event, JSONFormat())
    ours = encode(received, GATEWAY, Format.BINARY)
    assert ours.body == sdk.body
    assert {name.lower(): value for name, value in ours.headers.items()} == {
        name.lower(): value for name, value in sdk.headers.items()
    }


@pytest.mark.parametrize(
    ("payload", "content_type", "data"),
    [
        (b'{"slot": "14:00"}', "application/json", {"slot": "14:00"}),
        (b"plain words", "text/plain", "plain words"),
        (NOT_UTF8, "application/octet-stream", NOT_UTF8),
        (b"", "application/json", None),
    ],
    ids=["json", "text", "not-utf8", "empty"],
)
def test_binary_mode_decodes_back_with_the_sdk_to_the_same_attributes_and_data(
    payload: bytes, content_type: str, data: Any
) -> None:
    received = _full(payload, content_type)
    decoded = from_binary(_http(encode(received, GATEWAY, Format.BINARY)), JSONFormat())
    assert decoded.get_attributes() == _sdk_attributes(to_attributes(received, GATEWAY))
    assert decoded.get_data() == data


@pytest.mark.parametrize(
    ("payload", "content_type", "data"),
    [
        (
            b'{"slot": "14:00", "n": [1, 2.5, null]}',
            "application/json",
            {"slot": "14:00", "n": [1, 2.5, None]},
        ),
        (b'"just a string"', "application/vnd.api+json", "just a string"),
        (b"plain words", "text/plain", b"plain words"),
        (NOT_UTF8, "application/json", NOT_UTF8),
        (b"", "application/json", None),
    ],
    ids=["json", "plus-json", "text", "not-json", "empty"],
)
def test_structured_mode_decodes_back_with_the_sdk_to_the_same_attributes_and_data(
    payload: bytes, content_type: str, data: Any
) -> None:
    received = _full(payload, content_type)
    message = encode(received, GATEWAY, Format.STRUCTURED)
    decoded = from_structured(_http(message), JSONFormat())
    assert message.headers == {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    assert decoded.get_attributes() == _sdk_attributes(to_attributes(received, GATEWAY))
    assert decoded.get_data() == data


def test_structured_mode_puts_a_json_payload_in_data_as_json() -> None:
    body = json.loads(encode(_full(b'{"slot": "14:00"}'), GATEWAY, Format.STRUCTURED).body)
    assert body["data"] == {"slot": "14:00"}
    assert "data_base64" not in body


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"plain words", "text/plain"),
        (b"{not json", "application/json"),
        (b"null", "application/json"),
        (b"NaN", "application/json"),
        (b"[" * 65 + b"]" * 65, "application/json"),
        (b'{"a": 1} {"b": 2}', "application/json"),
        (b'"tab\tinside"', "application/json"),
        (b'\xef\xbb\xbf{"bom": true}', "application/json"),
        (NOT_UTF8, "application/json"),
    ],
    ids=["text", "broken-json", "json-null", "nan", "bom", "not-utf8", "too-deep", "two-values", "raw-tab"],
)
def test_structured_mode_puts_anything_but_json_in_data_base64(payload: bytes, content_type: str) -> None:
    body = json.loads(encode(_full(payload, content_type), GATEWAY, Format.STRUCTURED).body)
    assert base64.b64decode(body["data_base64"]) == payload
    assert "data" not in body


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v": 1e400, "w": -1e400}',
        b'{"big": 123456789012345678901234567890, "exact": 0.1000000000000000055511151231257827}',
        b"  [1,\n 2 ]  ",
        b"[" * 64 + b"]" * 64,
        b'{"dup": 1, "dup": 2}',
        b'"\\ud800"',
        b"[" + b"7" * 5000 + b"]",
    ],
    ids=[
        "overflowing",
        "big-numbers",
        "whitespace",
        "64-deep",
        "duplicate-keys",
        "escaped-surrogate",
        "long-int",
    ],
)
def test_structured_mode_embeds_json_as_its_own_text_byte_for_byte(payload: bytes) -> None:
    body = encode(_full(payload), GATEWAY, Format.STRUCTURED).body
    assert body.endswith(b',"data":' + payload + b"}")
    assert b"Infinity" not in body


def test_structured_mode_with_no_content_type_embeds_json_and_encodes_the_rest() -> None:
    as_json = encode(_received(payload=b'{"a": 1}'), GATEWAY, Format.STRUCTURED).body
    as_bytes = json.loads(encode(_received(payload=b"\x00\x01"), GATEWAY, Format.STRUCTURED).body)
    assert as_json.endswith(b',"data":{"a": 1}}')
    assert b"datacontenttype" not in as_json
    assert base64.b64decode(as_bytes["data_base64"]) == b"\x00\x01"


def test_binary_mode_sends_no_content_type_when_the_server_sent_none() -> None:
    headers = encode(_received(payload=b"x"), GATEWAY, Format.BINARY).headers
    assert "Content-Type" not in headers
    assert "ce-datacontenttype" not in headers


def test_structured_mode_sends_an_empty_payload_as_an_event_without_data() -> None:
    body = json.loads(encode(_full(b""), GATEWAY, Format.STRUCTURED).body)
    assert "data" not in body
    assert "data_base64" not in body


@pytest.mark.parametrize("fmt", [Format.BINARY, Format.STRUCTURED])
def test_an_extension_with_a_json_value_survives_the_round_trip(fmt: Format) -> None:
    message = _http(encode(_full(), GATEWAY, fmt))
    decoded = (
        from_binary(message, JSONFormat()) if fmt is Format.BINARY else from_structured(message, JSONFormat())
    )
    schedule = decoded.get_extension("schedule")
    assert schedule == '{"cron": "0 * * * *", "jitter": [1, 2]}'
    assert json.loads(schedule) == {"cron": "0 * * * *", "jitter": [1, 2]}


@pytest.mark.parametrize("fmt", list(Format))
def test_a_message_carries_the_event_id_the_source_name_and_the_monotonic_receive_time(fmt: Format) -> None:
    message = encode(_full(), GATEWAY, fmt, received_monotonic=1234.5)
    assert (message.event_id, message.source, message.received_at) == ("hourly-1573224723", "hourly", 1234.5)


def test_a_fresh_id_is_the_same_in_the_message_and_in_the_headers() -> None:
    message = encode(_received(payload=b"{}"), GATEWAY, Format.BINARY)
    assert message.headers["ce-id"] == message.event_id
    assert uuid.UUID(message.event_id).version == 4


def test_encoding_leaves_the_received_event_unchanged() -> None:
    received = _full()
    before = received.event.SerializeToString(deterministic=True)
    for fmt in Format:
        encode(received, GATEWAY, fmt)
    assert received.event.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize("payload", [b'{"message":"hi"}', NOT_UTF8, b""], ids=["json", "not-utf8", "empty"])
def test_a_v0_11_sensor_decodes_the_legacy_body_as_its_own_envelope(payload: bytes) -> None:
    message = encode(_full(payload, "application/octet-stream"), GATEWAY, Format.LEGACY)
    obj = json.loads(message.body)
    context = obj["context"]
    assert message.headers == {"Content-Type": "application/json"}
    assert list(obj) == ["context", "payload"]
    assert list(context) == LEGACY_CONTEXT_KEYS
    assert list(context["source"]) == LEGACY_SOURCE_KEYS
    assert base64.b64decode(obj["payload"], validate=True) == payload
    assert context["source"]["host"] == "calendar-gateway:hourly"
    assert context["source"]["port"] == 0
    assert {k: v for k, v in context["source"].items() if k not in ("host", "port")} == dict.fromkeys(
        ["scheme", "user", "password", "path", "query", "fragment"], ""
    )
    assert context["eventType"] == "calendar"
    assert context["eventTypeVersion"] == "v0.10"
    assert context["cloudEventsVersion"] == "0.1"
    assert context["eventID"] == message.event_id == "hourly-1573224723"
    assert MICRO_TIME.match(context["eventTime"])
    assert context["eventTime"] == "2019-11-08T14:52:03.123456Z"
    assert context["schemaURL"] is None
    assert context["contentType"] == "application/json"


def test_the_legacy_body_is_compact_json_of_the_legacy_envelope() -> None:
    received = _full()
    body = encode(received, GATEWAY, Format.LEGACY).body
    assert body == json.dumps(legacy_envelope(received, GATEWAY), separators=(",", ":")).encode()
    assert b" " not in body


def test_a_legacy_event_from_an_old_server_carries_a_uuid_and_the_receive_time_in_micro_time() -> None:
    context = legacy_envelope(_received(payload=b"{}"), GATEWAY)["context"]
    assert uuid.UUID(context["eventID"]).version == 4
    assert context["eventTime"] == "2019-11-08T14:52:04.250000Z"
    assert "extensions" not in context


def test_a_whole_second_event_time_still_has_six_fractional_digits_in_the_legacy_envelope() -> None:
    context = legacy_envelope(_received(time="2019-11-08T15:52:03+01:00"), GATEWAY)["context"]
    assert context["eventTime"] == "2019-11-08T14:52:03.000000Z"


@pytest.mark.parametrize(
    "payload", [b"{not json", b"[1,", b"NaN", b"\xff\xfe", b"[" * 65 + b"]" * 65], ids=str
)
def test_a_json_label_on_a_payload_that_is_not_json_becomes_octet_stream(payload: bytes) -> None:
    attributes = to_attributes(_received(payload=payload, content_type="application/json"), GATEWAY)
    assert attributes["datacontenttype"] == "application/octet-stream"
    assert attributes["origcontenttype"] == "application/json"


@pytest.mark.parametrize("payload", [b"", b"{}", b'"text"', b"[" * 64 + b"]" * 64])
def test_a_json_label_on_json_is_kept(payload: bytes) -> None:
    attributes = to_attributes(_received(payload=payload, content_type="application/json"), GATEWAY)
    assert attributes["datacontenttype"] == "application/json"
    assert "origcontenttype" not in attributes


@pytest.mark.parametrize(
    "payload", [b"null", b"false", b"0", b"-0.0e5", b'""', b" 0 ", b"1e400", b"-1e400", b"1e-400"]
)
def test_json_that_readers_take_for_no_data_or_cannot_hold_goes_as_data_base64(payload: bytes) -> None:
    body = json.loads(encode(_full(payload), GATEWAY, Format.STRUCTURED).body)
    assert base64.b64decode(body["data_base64"]) == payload
    assert "data" not in body
