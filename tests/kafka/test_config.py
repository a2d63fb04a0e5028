"""The Kafka source config: v0.11's schema and messages, and each opt-in field checked by name."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.secrets import SecretRef
from common.tls import TlsFiles
from gateways.kafka.config import DEFAULT_SESSION_TIMEOUT, Group, Sasl, parse


def problems(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as refused:
        parse(data)
    return refused.value.problems


def test_the_v0_11_example_parses_with_its_partition_as_a_number() -> None:
    config = parse('url: kafka:9092\ntopic: foo\npartition: "0"')
    assert (config.brokers, config.topic, config.partition, config.group) == (("kafka:9092",), "foo", 0, None)
    assert config.security_protocol == "PLAINTEXT"


def test_v0_11_s_own_messages_name_each_missing_field() -> None:
    assert problems("backoff: {steps: 1}") == {
        "url": ["url must be specified"],
        "topic": ["topic must be specified"],
        "partition": ["partition must be specified"],
    }


@pytest.mark.parametrize("partition", ['"x"', '"2147483648"', '"-1"', "1.5", "true", '""'])
def test_a_partition_that_is_not_an_int32_of_zero_or_more_is_refused(partition: str) -> None:
    found = problems(f"url: k:9092\ntopic: t\npartition: {partition}")
    assert list(found) == ["partition"], found


def test_a_comma_list_of_brokers_is_read_and_a_broker_without_a_port_is_refused() -> None:
    assert parse("url: a:9092, b:9093\ntopic: t\npartition: 1").brokers == ("a:9092", "b:9093")
    assert problems("url: a:9092,b\ntopic: t\npartition: 1") == {
        "url": ["'b' must be host:port (a comma list for several brokers)"]
    }
    assert problems("url: a:0\ntopic: t\npartition: 1") == {
        "url": ["'a:0': the port must be from 1 to 65535"]
    }


@pytest.mark.parametrize("topic", ["has space", "a/b", "..", "x" * 250, "ü"])
def test_a_topic_name_kafka_would_refuse_is_refused(topic: str) -> None:
    assert list(problems(f"url: k:9092\ntopic: '{topic}'\npartition: '0'")) == ["topic"]


def test_a_consumer_group_needs_no_partition_and_refuses_one() -> None:
    config = parse("url: k:9092\ntopic: t\nconsumerGroup: {groupName: g}")
    assert config.group == Group("g", oldest=False, session_timeout=DEFAULT_SESSION_TIMEOUT)
    assert config.partition is None
    assert problems("url: k:9092\ntopic: t\npartition: '0'\nconsumerGroup: {groupName: g}") == {
        "partition": ["does not apply with consumerGroup: the group assigns partitions"]
    }


def test_each_bad_consumer_group_field_is_named() -> None:
    found = problems(
        "url: k:9092\ntopic: t\nconsumerGroup: {groupName: g, oldest: yes-please, sessionTimeout: 2h, x: 1}"
    )
    assert found == {
        "consumerGroup.oldest": ["must be true or false, got 'yes-please'"],
        "consumerGroup.sessionTimeout": ["must be from 1s to 5m, got '2h'"],
        "consumerGroup.x": ["unknown field (known fields: groupName, oldest, sessionTimeout)"],
    }
    assert problems("url: k:9092\ntopic: t\nconsumerGroup: {oldest: true}") == {
        "consumerGroup.groupName": ["groupName must be specified"]
    }


def test_tls_and_sasl_make_the_security_protocol_and_secrets_stay_references() -> None:
    config = parse(
        "url: k:9093\ntopic: t\npartition: '0'\ntls: {ca: /ca.crt}\n"
        "sasl: {mechanism: SCRAM-SHA-512, username: app, password: {file: /p}}"
    )
    assert config.tls == TlsFiles(ca="/ca.crt")
    assert config.sasl == Sasl("SCRAM-SHA-512", "app", SecretRef(file="/p"))
    assert config.security_protocol == "SASL_SSL"
    assert parse("url: k:9093\ntopic: t\npartition: '0'\ntls: {}").security_protocol == "SSL"


def test_a_password_written_in_the_config_is_refused_and_never_echoed() -> None:
    found = problems("url: k:9092\ntopic: t\npartition: '0'\nsasl: {username: app, password: hunter2}")
    assert list(found) == ["sasl.password"]
    assert "hunter2" not in str(found)


def test_an_unknown_mechanism_and_a_missing_username_are_named() -> None:
    found = problems("url: k:9092\ntopic: t\npartition: '0'\nsasl: {mechanism: GSSAPI, password: {env: P}}")
    assert found == {
        "sasl.mechanism": ["must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got 'GSSAPI'"],
        "sasl.username": ["username must be specified"],
    }


def test_an_unknown_field_is_an_error_naming_the_known_ones() -> None:
    assert list(problems("url: k:9092\ntopic: t\npartition: '0'\ngroup: g")) == ["group"]
