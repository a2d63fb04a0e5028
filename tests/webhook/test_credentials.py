"""Secrets from files and variables (rotated files re-read, never shown), bearer tokens, HMAC signatures,
and the token bucket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.errors import SourceFailed, SourceUnavailable
from gateways.webhook.auth import Secret, Verdict, check_bearer, check_signature, sign
from gateways.webhook.config import SecretRef
from gateways.webhook.ratelimit import TokenBucket


def test_a_file_secret_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    secret = Secret(SecretRef(file=str(path)))

    secret.load()

    assert secret.value() == b"s3cret"


def test_a_rotated_file_secret_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    secret = Secret(SecretRef(file=str(path)))
    secret.load()

    replacement = tmp_path / "token.new"
    replacement.write_text("new-and-longer")
    os.replace(replacement, path)

    assert secret.value() == b"new-and-longer"


def test_a_file_secret_that_vanishes_keeps_its_last_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    secret = Secret(SecretRef(file=str(path)))
    secret.load()
    path.unlink()

    assert secret.value() == b"kept"
    assert "keeping the last value" in caplog.text
    assert "kept" not in caplog.text.replace("keeping", "")


def test_a_missing_secret_file_is_worth_retrying(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="cannot read the secret file"):
        Secret(SecretRef(file=str(tmp_path / "absent"))).load()


def test_an_unset_secret_variable_is_not_worth_retrying() -> None:
    with pytest.raises(SourceFailed, match="WEBHOOK_TOKEN is unset or empty"):
        Secret(SecretRef(env="WEBHOOK_TOKEN"), environ={}).load()


def test_a_secret_shows_where_it_is_never_what_it_is() -> None:
    secret = Secret(SecretRef(env="TOKEN"), environ={"TOKEN": "hunter2"})
    secret.load()

    assert repr(secret) == "Secret(env TOKEN)"
    assert "hunter2" not in repr(secret.ref)


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, Verdict.MISSING),
        ("", Verdict.MISSING),
        ("Basic dXNlcjpwYXNz", Verdict.MISSING),
        ("Bearer", Verdict.MISSING),
        ("Bearer wrong", Verdict.WRONG),
        ("Bearer right", Verdict.OK),
        ("bearer right", Verdict.OK),
    ],
)
def test_a_bearer_token_is_missing_wrong_or_right(header: str | None, verdict: Verdict) -> None:
    assert check_bearer(header, b"right") is verdict


def test_a_signature_is_githubs_sha256_hmac_of_the_body() -> None:
    # The example from GitHub's "Validating webhook deliveries" guide.
    assert sign(b"Hello, World!", b"It's a Secret to Everybody") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, Verdict.MISSING),
        ("  ", Verdict.MISSING),
        ("sha256=00", Verdict.WRONG),
        ("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", Verdict.WRONG),
        ("sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17", Verdict.OK),
        ("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", Verdict.OK),
        ("sha256=\u00e9", Verdict.WRONG),
    ],
)
def test_a_signature_is_missing_wrong_or_right(header: str | None, verdict: Verdict) -> None:
    assert check_signature(header, b"Hello, World!", b"It's a Secret to Everybody") is verdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == 1
    clock.now += 0.5
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 60
    assert [bucket.take() for _ in range(4)] == [True, True, True, False], "never more than the burst"


def test_a_slow_bucket_says_how_many_whole_seconds_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0.1, 1, clock=clock)

    assert bucket.take()
    assert not bucket.take()
    assert bucket.retry_after() == 10
    clock.now += 9.5
    assert bucket.retry_after() == 1
