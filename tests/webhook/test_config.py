"""The webhook config: the v0.11 fields and messages, our additions, every bad field named at once."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from gateways.webhook.config import (
    DEFAULT_MAX_BODY,
    DEFAULT_READ_TIMEOUT,
    MAX_BODY,
    RateLimit,
    SecretRef,
    Signature,
    TlsFiles,
    parse,
)


def problems(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return caught.value.problems


def test_the_v0_11_fields_parse_with_our_defaults() -> None:
    config = parse('endpoint: /push\nmethod: POST\nport: "12000"\nurl: http://ignored.example')

    assert (config.endpoint, config.method, config.port) == ("/push", "POST", 12000)
    assert config.tls is None
    assert config.max_body_bytes == DEFAULT_MAX_BODY == 1024 * 1024
    assert config.read_timeout == DEFAULT_READ_TIMEOUT == 10.0
    assert (config.bearer_token, config.signature, config.rate_limit) == (None, None, None)


def test_a_port_may_be_a_string_or_a_number() -> None:
    assert parse("endpoint: /a\nmethod: GET\nport: 12000").port == 12000
    assert parse("endpoint: /a\nmethod: GET\nport: '12000'").port == 12000


def test_a_leading_slash_is_added_and_a_trailing_slash_is_kept() -> None:
    assert parse("endpoint: push\nmethod: POST\nport: 1").endpoint == "/push"
    assert parse("endpoint: /push/\nmethod: POST\nport: 1").endpoint == "/push/"
    assert parse("endpoint: /push\nmethod: POST\nport: 1").endpoint == "/push"


def test_an_empty_config_names_every_required_field_with_the_v0_11_messages() -> None:
    found = problems("{}")

    assert found["endpoint"] == ["endpoint can't be empty"]
    assert found["port"] == ["port can't be empty"]
    assert found["method"][0].startswith("method can't be empty")


def test_two_bad_fields_are_named_in_one_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("endpoint: /a\nmethod: FETCH\nport: twelve")

    message = str(caught.value)
    assert "method: unknown HTTP method FETCH" in message
    assert "port: failed to parse server port 'twelve'" in message


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ("endpoint: /a\nmethod: post\nport: 1", "method", "unknown HTTP method post"),
        ("endpoint: /a b\nmethod: POST\nport: 1", "endpoint", "without spaces"),
        ("endpoint: /a?x=1\nmethod: POST\nport: 1", "endpoint", "'?'"),
        ("endpoint: [1]\nmethod: POST\nport: 1", "endpoint", "must be a string"),
        ("endpoint: /a\nmethod: POST\nport: 0", "port", "between 1 and 65535"),
        ("endpoint: /a\nmethod: POST\nport: 70000", "port", "between 1 and 65535"),
        ("endpoint: /a\nmethod: POST\nport: true", "port", "whole number"),
        ("endpoint: /a\nmethod: POST\nport: 1\nmaxBodyBytes: 4194304", "maxBodyBytes", "3 MiB"),
        ("endpoint: /a\nmethod: POST\nport: 1\nmaxBodyBytes: -1", "maxBodyBytes", "from 0"),
        ("endpoint: /a\nmethod: POST\nport: 1\nmaxHeaderBytes: 100", "maxHeaderBytes", "from 1024 to 262144"),
        ("endpoint: /a\nmethod: POST\nport: 1\nmaxHeaderBytes: 8k", "maxHeaderBytes", "whole number"),
        ("endpoint: /a\nmethod: POST\nport: 1\nreadTimeout: 10", "readTimeout", "duration"),
        ("endpoint: /a\nmethod: POST\nport: 1\nreadTimeout: 0s", "readTimeout", "more than 0s"),
        ("endpoint: /a\nmethod: POST\nport: 1\nreadTimeout: 1h", "readTimeout", "at most 10m"),
        ("endpoint: /a\nmethod: POST\nport: 1\nreadTimeout: soon", "readTimeout", "invalid duration"),
        ("endpoint: /a\nmethod: POST\nport: 1\nbearerToken: hunter2", "bearerToken", "{file: "),
        ("endpoint: /a\nmethod: POST\nport: 1\nbearerToken: {env: 1BAD}", "bearerToken.env", "variable name"),
        ("endpoint: /a\nmethod: POST\nport: 1\nbearerToken: {vault: x}", "bearerToken", "'vault'"),
        ("endpoint: /a\nmethod: POST\nport: 1\nsignature: {}", "signature.secret", "is required"),
        (
            "endpoint: /a\nmethod: POST\nport: 1\nsignature: {secret: {env: K}, header: 'a b'}",
            "signature.header",
            "",
        ),
        (
            "endpoint: /a\nmethod: POST\nport: 1\nsignature: {secret: {env: K}, algo: md5}",
            "signature.algo",
            "",
        ),
        (
            "endpoint: /a\nmethod: POST\nport: 1\nrateLimit: {requestsPerSecond: 0}",
            "rateLimit.requestsPerSecond",
            "",
        ),
        (
            "endpoint: /a\nmethod: POST\nport: 1\nrateLimit: {requestsPerSecond: 1, burst: 0}",
            "rateLimit.burst",
            "",
        ),
        ("endpoint: /a\nmethod: POST\nport: 1\nrateLimit: 5", "rateLimit", "mapping"),
        ("endpoint: /a\nmethod: POST\nport: 1\npath: /b", "path", "unknown field"),
        ("endpoint: /a\nmethod: POST\nport: 1\nurl: [x]", "url", "must be a string"),
    ],
)
def test_each_bad_field_is_named_with_its_problem(data: str, field: str, fragment: str) -> None:
    found = problems(data)

    assert field in found
    assert fragment in found[field][0]


@pytest.mark.parametrize(
    ("given", "missing"),
    [("serverCertPath: /c.pem", "serverKeyPath"), ("serverKeyPath: /k.pem", "serverCertPath")],
)
def test_tls_needs_both_files_or_neither(given: str, missing: str) -> None:
    found = problems(f"endpoint: /a\nmethod: POST\nport: 1\n{given}")

    assert found == {missing: [f"TLS needs both serverCertPath and serverKeyPath; {missing} is missing"]}


def test_tls_with_both_files_is_kept_without_reading_them_yet() -> None:
    config = parse("endpoint: /a\nmethod: POST\nport: 1\nserverCertPath: /no/c.pem\nserverKeyPath: /no/k.pem")

    assert config.tls == TlsFiles("/no/c.pem", "/no/k.pem")


def test_our_fields_parse_into_typed_values() -> None:
    config = parse(
        "endpoint: /a\nmethod: POST\nport: 1\n"
        f"maxBodyBytes: {MAX_BODY}\nreadTimeout: 1m30s\n"
        "bearerToken: {file: /etc/webhook/token}\n"
        "signature: {secret: {env: GITHUB_SECRET}}\n"
        "rateLimit: {requestsPerSecond: 2.5}\n"
        "maxHeaderBytes: 16384\n"
    )

    assert config.max_body_bytes == 3 * 1024 * 1024
    assert config.read_timeout == 90.0
    assert config.bearer_token == SecretRef(file="/etc/webhook/token")
    assert config.signature == Signature(SecretRef(env="GITHUB_SECRET"), "X-Hub-Signature-256")
    assert config.rate_limit == RateLimit(2.5, 3), "burst defaults to the rate, rounded up"
    assert config.max_header_bytes == 16384


def test_a_secret_reference_never_holds_nor_shows_the_secret() -> None:
    ref = SecretRef(env="TOKEN")

    assert ref.describe() == "env TOKEN"
    assert SecretRef(file="/s").describe() == "file /s"


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    assert problems("- a\n- b") == {"data": ["must be a mapping of webhook fields"]}
    assert "not valid YAML" in problems("endpoint: [")["data"][0]
