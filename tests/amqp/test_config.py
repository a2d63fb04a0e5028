"""The AMQP source config: v0.11's schema and messages, its rate-limit check applied, and each
opt-in field checked by name."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.secrets import SecretRef
from gateways.amqp.config import Exchange, Queue, RateLimit, parse

V011 = "url: amqp://h:5672/\nexchangeName: test\nexchangeType: fanout\nroutingKey: hello"


def problems(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as refused:
        parse(data)
    return refused.value.problems


def test_the_v0_11_example_parses_as_v0_11_ran_it() -> None:
    config = parse(V011)
    assert (config.exchange_name, config.exchange_type, config.routing_key) == ("test", "fanout", "hello")
    assert config.queue is None and config.rate is None and config.exchange == Exchange()
    assert not config.uses_tls


def test_v0_11_s_own_messages_name_each_missing_field() -> None:
    assert problems("backoff: {steps: 1}") == {
        "url": ["url must be specified"],
        "exchangeName": ["exchange name must be specified"],
        "routingKey": ["routing key must be specified"],
        "exchangeType": ["exchange type must be specified"],
    }


@pytest.mark.parametrize("given", ["rateLimit: 5", "ratePeriod: 5"])
def test_a_rate_limit_needs_both_fields_as_v0_11_meant_and_never_checked(given: str) -> None:
    field = given.split(":")[0]
    assert problems(f"{V011}\n{given}") == {field: ["RateLimit and RatePeriod must be either set or omitted"]}


def test_a_rate_limit_reads_whole_numbers_and_refuses_others() -> None:
    assert parse(f"{V011}\nrateLimit: 10\nratePeriod: 5").rate == RateLimit(10, 5)
    found = problems(f"{V011}\nrateLimit: 0\nratePeriod: 1.5")
    assert set(found) == {"rateLimit", "ratePeriod"}


def test_an_unknown_exchange_type_and_a_url_of_another_scheme_are_named() -> None:
    found = problems("url: http://h\nexchangeName: e\nexchangeType: weird\nroutingKey: k")
    assert found == {
        "url": ["'http://h' must be amqp://host[:port][/vhost] or amqps://..."],
        "exchangeType": ["must be one of direct, fanout, topic, headers, got 'weird'"],
    }


def test_a_declared_queue_takes_its_flags_and_arguments() -> None:
    config = parse(
        f"{V011}\nqueueDeclare: {{name: orders, durable: false, autoDelete: true, "
        "arguments: {x-queue-type: quorum, x-message-ttl: 60000}}"
    )
    assert config.queue == Queue(
        "orders",
        durable=False,
        auto_delete=True,
        arguments={"x-queue-type": "quorum", "x-message-ttl": 60000},
    )


def test_each_bad_queue_field_is_named_at_once() -> None:
    found = problems(
        f"{V011}\nqueueDeclare: {{name: amq.mine, durable: sometimes, arguments: [1], extra: 1}}"
    )
    assert set(found) == {
        "queueDeclare.name",
        "queueDeclare.durable",
        "queueDeclare.arguments",
        "queueDeclare.extra",
    }


def test_credentials_come_once_and_by_reference_and_a_url_is_shown_redacted() -> None:
    config = parse(f"{V011}\nusername: app\npassword: {{file: /p}}")
    assert (config.username, config.password) == ("app", SecretRef(file="/p"))
    inline = parse("url: amqp://app:s3cret@h/\nexchangeName: e\nexchangeType: topic\nroutingKey: k")
    assert inline.display_url == "amqp://app:***@h/"
    found = problems(
        "url: amqp://app:s3cret@h/\nexchangeName: e\nexchangeType: topic\nroutingKey: k\n"
        "username: app\npassword: {env: P}"
    )
    assert found == {"url": ["holds credentials, and so do username and password: give them once"]}
    assert "s3cret" not in str(
        problems("url: amqp://app:s3cret@h:0/\nexchangeName: e\nexchangeType: topic\nroutingKey: k")
    )


def test_tls_needs_an_amqps_url() -> None:
    assert problems(f"{V011}\ntls: {{ca: /ca}}") == {
        "tls": ["needs an amqps:// url (TLS from the first byte, port 5671 by default)"]
    }
    assert parse("url: amqps://h/\nexchangeName: e\nexchangeType: topic\nroutingKey: k").uses_tls
