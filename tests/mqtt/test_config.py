"""The MQTT source config: v0.11's schema and messages, each opt-in field checked by name, and one
client id per broker."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.secrets import SecretRef
from gateways.mqtt import KIND
from gateways.mqtt.config import parse

V011 = "url: tcp://h:1883\ntopic: foo\nclientId: gw"


def problems(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as refused:
        parse(data)
    return refused.value.problems


def test_the_v0_11_example_parses_at_qos_0_over_mqtt_3_1_1() -> None:
    config = parse(V011)
    assert (config.host, config.port, config.topic, config.client_id) == ("h", 1883, "foo", "gw")
    assert (config.qos, config.protocol, config.persistent, config.uses_tls) == (0, "3.1.1", False, False)


def test_v0_11_s_own_messages_name_each_missing_field() -> None:
    assert problems("backoff: {steps: 1}") == {
        "url": ["url must be specified"],
        "topic": ["topic must be specified"],
        "clientId": ["client id must be specified"],
    }


@pytest.mark.parametrize(
    ("url", "port", "tls", "transport"),
    [
        ("tcp://h", 1883, False, "tcp"),
        ("ssl://h", 8883, True, "tcp"),
        ("mqtts://h:9000", 9000, True, "tcp"),
        ("ws://h/mqtt", 80, False, "websockets"),
        ("wss://h:8443/ws", 8443, True, "websockets"),
    ],
)
def test_each_url_scheme_paho_takes_is_read_with_its_default_port(
    url: str, port: int, tls: bool, transport: str
) -> None:
    config = parse(f"url: {url}\ntopic: t\nclientId: c")
    assert (config.port, config.uses_tls, config.transport) == (port, tls, transport)


@pytest.mark.parametrize("topic", ["a/#/b", "a/b+", "$share/g", "$share//t"])
def test_a_topic_filter_mqtt_would_refuse_is_refused(topic: str) -> None:
    assert list(problems(f"url: tcp://h\ntopic: {topic!r}\nclientId: c")) == ["topic"]


def test_wildcards_and_shared_subscriptions_are_topics_like_any_other() -> None:
    for topic in ("sensors/+/t", "sensors/#", "#", "$share/gateways/orders/#"):
        assert parse(f"url: tcp://h\ntopic: '{topic}'\nclientId: c").topic == topic


def test_each_bad_opt_in_field_is_named_at_once() -> None:
    found = problems(f"{V011}\nqos: 3\nprotocol: 4\npersistentSession: maybe\nsessionExpiry: 1h\nextra: 1")
    assert set(found) == {"qos", "protocol", "persistentSession", "sessionExpiry", "extra"}


def test_a_session_expiry_applies_to_a_persistent_mqtt_5_session_only() -> None:
    config = parse(f"{V011}\nprotocol: '5'\npersistentSession: true\nsessionExpiry: 24h")
    assert config.session_expiry == 86400
    assert problems(f"{V011}\npersistentSession: true\nsessionExpiry: 24h") == {
        "sessionExpiry": ["applies only with persistentSession: true and protocol: '5'"]
    }


def test_credentials_are_references_and_tls_needs_a_tls_url() -> None:
    config = parse(f"{V011}\nusername: app\npassword: {{env: P}}")
    assert (config.username, config.password) == ("app", SecretRef(env="P"))
    assert list(problems(f"{V011}\npassword: hunter2")) == ["password", "username"]
    assert problems(f"{V011}\ntls: {{ca: /ca}}") == {
        "tls": ["needs a TLS url (ssl://, mqtts:// or wss://), not tcp://"]
    }


def test_two_sources_with_one_client_id_on_one_broker_are_refused_and_on_two_brokers_are_not() -> None:
    first = parse(V011)
    with pytest.raises(ConfigError) as clash:
        KIND.check_clashes("second", parse(V011), {"first": first})
    assert clash.value.problems == {"clientId": ["'gw' is the client id of event source 'first' too"]}
    KIND.check_clashes(
        "elsewhere", parse("url: tcp://other:1883\ntopic: foo\nclientId: gw"), {"first": first}
    )
