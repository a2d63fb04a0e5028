"""The NATS config: v0.11's schema and messages, our opt-in fields, every bad field named at once."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime

import pytest

from common.errors import ConfigError
from common.retry import Backoff
from common.secrets import SecretRef
from common.tls import TlsFiles
from gateways.nats.config import DEFAULT_ACK_WAIT, DEFAULT_MAX_ACK_PENDING, JetStream, parse


def problems(data: str) -> dict[str, list[str]]:
    with pytest.raises(ConfigError) as refused:
        parse(data)
    return refused.value.problems


def test_the_v0_11_example_parses_as_v0_11_wrote_it() -> None:
    config = parse(
        "url: nats://nats.argo-events:4222\nsubject: foo\n"
        "backoff: {duration: 10000000000, factor: 2, jitter: 0.2, steps: 5}"
    )
    assert (config.url, config.subject, config.servers) == (
        "nats://nats.argo-events:4222",
        "foo",
        ("nats://nats.argo-events:4222",),
    )
    assert config.backoff == Backoff(duration=10.0, factor=2.0, jitter=0.2, steps=5)
    assert (config.queue_group, config.jetstream, config.tls, config.auth.method) == ("", None, None, "")


def test_without_backoff_the_first_connect_is_retried_forever() -> None:
    assert parse("url: nats://h:4222\nsubject: foo").backoff == Backoff()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", {"data": ["configuration must be non empty"]}),
        ("subject: foo", {"url": ["url must be specified"]}),
        ("url: nats://h", {"subject": ["subject must be specified"]}),
        (
            "url: ''\nsubject: ''",
            {"url": ["url must be specified"], "subject": ["subject must be specified"]},
        ),
    ],
)
def test_v0_11_validation_messages_are_kept(data: str, expected: dict[str, list[str]]) -> None:
    assert problems(data) == expected


def test_every_bad_field_is_named_at_once_unknown_fields_included() -> None:
    found = problems(
        "url: http://h\nsubject: 'a b'\nqueueGroup: 'x y'\nbackoff: {steps: -1}\n"
        "tls: {cert: /c}\nsubjet: typo"
    )
    assert set(found) == {"url", "subject", "queueGroup", "backoff.steps", "tls.key", "subjet"}
    assert found["subjet"] == [
        "unknown field (known fields: url, subject, backoff, queueGroup, jetStream, token, username, "
        "password, nkey, credentials, tls)"
    ]


@pytest.mark.parametrize(
    "url",
    ["nats://a:4222,nats://b:4222", "tls://h:4443", "nats://h", "nats://user:pass@h:4222", "nats://tok@h"],
)
def test_urls_go_nats_took_are_taken(url: str) -> None:
    assert parse(f"url: '{url}'\nsubject: foo").url == url


@pytest.mark.parametrize(
    "url", ["http://h", "nats://", "nats://h:99999", "nats://h:4222/path", "nats://h?x=1", "nats://h,ws://g"]
)
def test_urls_that_are_not_nats_servers_are_refused(url: str) -> None:
    assert list(problems(f"url: '{url}'\nsubject: foo")) == ["url"]


def test_a_refused_url_never_shows_its_password() -> None:
    text = str(ConfigError(problems("url: 'http://me:s3cret@h'\nsubject: foo")))
    assert "s3cret" not in text
    assert "http://me:***@h" in text


@pytest.mark.parametrize("subject", ["foo", "foo.bar", "foo.*", "foo.>", ">", "*.b.>", "a-b_c.D9"])
def test_nats_subjects_with_wildcards_are_taken(subject: str) -> None:
    assert parse(f"url: nats://h\nsubject: '{subject}'").subject == subject


@pytest.mark.parametrize("subject", ["foo bar", "foo..bar", ".foo", "foo.", "foo.>.bar", "fo*", "a.b>"])
def test_what_is_not_a_nats_subject_is_refused(subject: str) -> None:
    assert list(problems(f"url: nats://h\nsubject: '{subject}'")) == ["subject"]


def test_a_queue_group_is_opt_in() -> None:
    assert parse("url: nats://h\nsubject: s\nqueueGroup: workers").queue_group == "workers"


def test_jetstream_defaults_to_every_message_acked_within_30s_and_the_clients_window() -> None:
    config = parse("url: nats://h\nsubject: orders.>\njetStream: {}")
    assert config.jetstream == JetStream()
    assert (config.jetstream.ack_wait, config.jetstream.max_ack_pending) == (DEFAULT_ACK_WAIT, 1000)
    assert DEFAULT_MAX_ACK_PENDING == 1000
    assert config.durable_for("orders.eu-1") == "orders_eu-1", "a consumer name holds no dots"


def test_jetstream_takes_its_stream_durable_policy_and_limits() -> None:
    config = parse(
        "url: nats://h\nsubject: orders.>\njetStream:\n  stream: ORDERS\n  durable: gw\n"
        "  deliverPolicy: by_start_time\n  startTime: '2026-01-02T03:04:05Z'\n"
        "  ackWait: 1m\n  maxAckPending: 50"
    )
    assert config.jetstream == JetStream(
        "ORDERS", "gw", "by_start_time", 0, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), 60.0, 50
    )
    assert config.durable_for("anything") == "gw"


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ("stream: 'a.b'", "jetStream.stream"),
        ("durable: 'x y'", "jetStream.durable"),
        ("deliverPolicy: first", "jetStream.deliverPolicy"),
        ("deliverPolicy: by_start_sequence", "jetStream.startSequence"),
        ("startSequence: 5", "jetStream.startSequence"),
        ("deliverPolicy: by_start_time\n  startTime: '2026-01-02T03:04:05'", "jetStream.startTime"),
        ("ackWait: 500ms", "jetStream.ackWait"),
        ("ackWait: 30", "jetStream.ackWait"),
        ("maxAckPending: 0", "jetStream.maxAckPending"),
        ("pull: true", "jetStream.pull"),
    ],
)
def test_bad_jetstream_fields_are_named(fields: str, bad: str) -> None:
    assert list(problems(f"url: nats://h\nsubject: s\njetStream:\n  {fields}")) == [bad]


def test_a_queue_group_does_not_combine_with_jetstream() -> None:
    assert list(problems("url: nats://h\nsubject: s\nqueueGroup: q\njetStream: {}")) == ["queueGroup"]


def test_credentials_are_secret_references_never_the_secret_itself() -> None:
    config = parse(
        "url: nats://h\nsubject: s\nusername: {file: /etc/nats/user/username}\npassword: {env: NATS_PASSWORD}"
    )
    assert config.auth.username == SecretRef(file="/etc/nats/user/username")
    assert config.auth.password == SecretRef(env="NATS_PASSWORD")
    assert parse("url: nats://h\nsubject: s\nusername: app\npassword: {env: P}").auth.username == "app"
    assert parse("url: nats://h\nsubject: s\ntoken: {file: /t}").auth.token == SecretRef(file="/t")
    assert list(problems("url: nats://h\nsubject: s\ntoken: hunter2")) == ["token"]


@pytest.mark.parametrize(
    ("auth", "bad"),
    [
        ("username: app", ["password"]),
        ("password: {env: P}", ["username"]),
        ("token: {env: T}\nusername: app\npassword: {env: P}", ["username"]),
        ("username: {secret: x}\npassword: {env: P}", ["username"]),
    ],
)
def test_one_way_to_log_in_and_each_complete(auth: str, bad: list[str]) -> None:
    assert list(problems(f"url: nats://h\nsubject: s\n{auth}")) == bad


def test_credentials_in_the_url_and_in_fields_are_refused_together() -> None:
    assert list(problems("url: 'nats://u:p@h'\nsubject: s\ntoken: {env: T}")) == ["url"]


def test_tls_takes_ca_cert_and_key_files() -> None:
    config = parse("url: tls://h\nsubject: s\ntls: {ca: /ca.crt, cert: /tls.crt, key: /tls.key}")
    assert config.tls == TlsFiles("/ca.crt", "/tls.crt", "/tls.key")
    assert parse("url: nats://h\nsubject: s\ntls: {}").tls == TlsFiles()
    assert list(problems("url: nats://h\nsubject: s\ntls: {ca: 1, pem: /x}")) == ["tls.ca", "tls.pem"]


def test_nkey_and_credentials_logins_are_refused_where_the_nkeys_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "nkeys" else real(name))
    found = problems("url: nats://h\nsubject: s\nnkey: {file: /seed.nk}")
    assert list(found) == ["nkey"]
    assert "needs the nkeys package" in found["nkey"][0]
    assert list(problems("url: nats://h\nsubject: s\ncredentials: {file: /u.creds}")) == ["credentials"]
