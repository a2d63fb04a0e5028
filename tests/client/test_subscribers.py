"""Subscriber URLs: the accepted forms, the subject, the redaction, and errors that name the problem."""

from __future__ import annotations

import pytest

from common.client.model import Format
from common.client.subscribers import SubscriberError, parse_subscriber, redact, subject_for


def test_an_http_url_keeps_its_query_but_not_the_format_parameter() -> None:
    spec = parse_subscriber("http://sensor:9300/hook?format=legacy&a=b%20c", Format.BINARY)
    assert (spec.scheme, spec.format) == ("http", Format.LEGACY)
    assert spec.address == "http://sensor:9300/hook?a=b%20c"
    assert spec.subject_template is None


def test_inflight_is_read_from_the_url_and_never_sent_to_an_http_subscriber() -> None:
    spec = parse_subscriber("http://sensor:9300/events?inflight=16&token=x&format=structured", Format.BINARY)
    assert (spec.inflight, spec.format) == (16, Format.STRUCTURED)
    assert spec.address == "http://sensor:9300/events?token=x"
    assert parse_subscriber("jetstream://nats:4222/ev?inflight=8", Format.BINARY).inflight == 8
    assert parse_subscriber("http://sensor:9300/events", Format.BINARY).inflight == 1


def test_an_http_url_without_a_format_takes_the_default() -> None:
    spec = parse_subscriber("https://sensor.example.com", Format.STRUCTURED)
    assert (spec.scheme, spec.format, spec.address) == (
        "https",
        Format.STRUCTURED,
        "https://sensor.example.com/",
    )


def test_a_nats_url_gets_the_default_port_and_no_subject_template() -> None:
    spec = parse_subscriber("nats://broker", Format.BINARY)
    assert (spec.scheme, spec.address, spec.subject_template) == ("nats", "nats://broker:4222", None)
    assert spec.is_nats


def test_a_jetstream_url_carries_its_subject_template() -> None:
    spec = parse_subscriber(
        "jetstream://broker:4333/events.{gateway}.{source}?format=structured", Format.BINARY
    )
    assert (spec.scheme, spec.address, spec.format) == ("jetstream", "nats://broker:4333", Format.STRUCTURED)
    assert subject_for(spec, "calendar-gateway", "daily") == "events.calendar-gateway.daily"


def test_the_default_subject_is_the_one_v011_published_on() -> None:
    spec = parse_subscriber("nats://broker:4222", Format.BINARY)
    assert subject_for(spec, "calendar-gateway", "daily") == "calendar-gateway:daily"


def test_credentials_reach_the_address_but_never_the_display() -> None:
    spec = parse_subscriber("nats://user:s3cret@broker:4222", Format.BINARY)
    assert spec.address == "nats://user:s3cret@broker:4222"
    assert spec.display == "nats://user:***@broker:4222"
    assert parse_subscriber("nats://tok3n@broker", Format.BINARY).display == "nats://***@broker"
    assert redact("https://h/p?token=abc&x=1") == "https://h/p?token=***&x=1"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("stan://host:4222", "NATS Streaming is not supported"),
        ("sensor:9300", "unknown scheme 'sensor'"),
        ("//host/x", "no scheme"),
        ("http://", "no host"),
        ("http://host:99999/", "not a valid URL"),
        ("http://host/?format=xml", "unknown format 'xml'"),
        ("http://host/?format=binary&format=legacy", "more than once"),
        ("nats://host?queue=q", "unknown parameter 'queue'"),
        ("http://host/?inflight=0", "inflight '0': expected a whole number from 1 to 256"),
        ("http://host/?inflight=257", "from 1 to 256"),
        ("http://host/?inflight=many", "inflight 'many'"),
        ("http://host/?inflight=%C2%B2", "inflight '²'"),
        ("nats://host?inflight=2&inflight=3", "'inflight' is given more than once"),
        ("nats://host/{namespace}.x", "uses 'namespace'"),
        ("nats://host/events.>", "wildcard"),
    ],
)
def test_a_bad_url_is_refused_with_the_problem_named(url: str, problem: str) -> None:
    with pytest.raises(SubscriberError, match="subscriber") as caught:
        parse_subscriber(url, Format.BINARY)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_error_about_a_url_does_not_leak_its_password() -> None:
    with pytest.raises(SubscriberError) as caught:
        parse_subscriber("http://user:hunter2@host/?format=xml", Format.BINARY)
    assert "hunter2" not in str(caught.value)
    assert "user:***@host" in str(caught.value)
