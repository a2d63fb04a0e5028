"""``common.secrets``, which the NATS kind shares with the webhook: references and URL redaction."""

from __future__ import annotations

import pytest

from common.secrets import SecretRef, parse_secret, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:pass@host:4222", "nats://user:***@host:4222"),
        ("nats://s3cr3t@host", "nats://***@host"),
        ("nats://host:4222", "nats://host:4222"),
        ("nats://a:1@h1:4222,nats://b:2@h2:4222", "nats://a:***@h1:4222,nats://b:***@h2:4222"),
        ("nats://u:p@ss@h", "nats://u:***@h"),
        ("nats://u:pa,ss@h,nats://h2", "nats://u:***@h,nats://h2"),
        ("nats://u:pa/ss@h", "nats://u:***@h"),
        ("cannot connect to nats://u:p@h:1: refused", "cannot connect to nats://u:***@h:1: refused"),
        ("no url here", "no url here"),
    ],
)
def test_credentials_inline_in_a_url_are_hidden_wherever_it_is_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_secret_reference_is_a_file_or_a_variable_never_a_value() -> None:
    problems: dict[str, str] = {}
    assert parse_secret({"file": " /etc/t "}, "token", problems) == SecretRef(file="/etc/t")
    assert parse_secret({"env": "TOKEN"}, "token", problems) == SecretRef(env="TOKEN")
    assert parse_secret(None, "token", problems) is None
    assert problems == {}
    assert parse_secret("hunter2", "token", problems) is None
    assert parse_secret({"env": "1BAD"}, "password", problems) is None
    assert parse_secret({"vault": "x"}, "nkey", problems) is None
    assert set(problems) == {"token", "password.env", "nkey"}
    assert "never written in the config" in problems["token"]
