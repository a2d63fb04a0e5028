"""Request <-> event: the body byte for byte, the rest as JSON-valued extensions, credentials held back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common.events import EXTENSION_NAME
from gateways.webhook.binding import HttpRequest, event_id, forwarded_headers, from_event, to_event

WHEN = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
BODY = bytes(range(256)) + b"\xff\xfe not utf-8"


def request(**changes: object) -> HttpRequest:
    fields: dict[str, object] = {
        "method": "POST",
        "path": "/github/push",
        "query": (("ref", "main"), ("tag", "a"), ("tag", "b")),
        "headers": (
            ("content-type", "application/octet-stream"),
            ("x-github-event", "push"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ),
        "body": BODY,
        "received_at": WHEN,
    }
    fields.update(changes)
    return HttpRequest(**fields)  # type: ignore[arg-type]


def test_a_request_survives_the_round_trip_through_an_event() -> None:
    original = request()

    assert from_event(to_event("hook", original)) == original


def test_the_payload_is_the_body_byte_for_byte_and_the_content_type_is_the_requests() -> None:
    event = to_event("hook", request())

    assert event.payload == BODY
    assert event.content_type == "application/octet-stream"
    assert event.time == WHEN


def test_an_empty_body_gives_an_empty_payload() -> None:
    assert to_event("hook", request(body=b"")).payload == b""


def test_the_extensions_are_method_path_and_json_query_and_headers() -> None:
    ext = to_event("hook", request()).extensions

    assert set(ext) == {"method", "path", "query", "headers"}
    assert all(EXTENSION_NAME.match(name) for name in ext)
    assert ext["method"] == "POST"
    assert ext["path"] == "/github/push"
    assert json.loads(ext["query"]) == {"ref": ["main"], "tag": ["a", "b"]}
    assert json.loads(ext["headers"])["x-multi"] == ["1", "2"]


def test_header_names_are_lower_cased() -> None:
    headers = forwarded_headers([("X-GitHub-Event", "push"), ("x-github-event", "ping")])

    assert headers == {"x-github-event": ["push", "ping"]}


def test_credentials_and_the_configured_signature_header_are_never_forwarded() -> None:
    secret = (
        ("Authorization", "Bearer t"),
        ("Proxy-Authorization", "Basic x"),
        ("Cookie", "a=b"),
        ("Set-Cookie", "c=d"),
        ("X-Hub-Signature", "sha1=00"),
        ("X-Hub-Signature-256", "sha256=00"),
        ("X-Custom-Sig", "abc"),
        ("X-Kept", "yes"),
    )

    ext = to_event("hook", request(headers=secret), strip=frozenset({"X-Custom-Sig"})).extensions

    assert json.loads(ext["headers"]) == {"x-kept": ["yes"]}


def test_the_id_comes_from_a_delivery_header_prefixed_with_the_source() -> None:
    assert event_id("hook", [("X-Request-Id", "r-1")], lambda: "fresh") == "hook:r-1"
    assert event_id("hook", [("X-GitHub-Delivery", "d-2")], lambda: "fresh") == "hook:d-2"
    assert event_id("hook", [("X-Gitlab-Event-UUID", "g-3")], lambda: "fresh") == "hook:g-3"
    both = [("X-GitHub-Delivery", "d-2"), ("X-Request-Id", "r-1")]
    assert event_id("hook", both, lambda: "fresh") == "hook:r-1", "X-Request-Id comes first"


def test_without_a_usable_delivery_header_the_id_is_fresh() -> None:
    assert event_id("hook", [], lambda: "fresh") == "hook:fresh"
    assert event_id("hook", [("X-Request-Id", "has space")], lambda: "fresh") == "hook:fresh"
    assert event_id("hook", [("X-Request-Id", "x" * 201)], lambda: "fresh") == "hook:fresh"


@pytest.mark.parametrize(
    "sent",
    [
        None,
        "",
        "text/plain; x=\u00e9",
        "json",
        "application/json; x",
        "a/b c",
        "text/plain\r\nX-Injected: 1",
        "application/cloudevents+json;\tcharset=utf-8",
        'text/plain; a="x\ty"',
    ],
    ids=[
        "none",
        "empty",
        "not-ascii",
        "no-subtype",
        "bare-parameter",
        "space",
        "injected",
        "tab",
        "quoted-tab",
    ],
)
def test_a_body_without_a_valid_content_type_is_labelled_octet_stream(sent: str | None) -> None:
    headers = () if sent is None else (("content-type", sent),)
    event = to_event("hook", request(headers=headers))

    assert event.content_type == "application/octet-stream"


@pytest.mark.parametrize(
    "sent",
    ["application/json", "text/plain; charset=utf-8", 'multipart/form-data; boundary="a b"', "text/csv;"],
)
def test_a_valid_content_type_is_kept_as_sent(sent: str) -> None:
    assert to_event("hook", request(headers=(("content-type", sent),))).content_type == sent
