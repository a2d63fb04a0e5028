"""The Kafka event-source config (the v0.11 schema, plus opt-in fields), validated.

v0.11 fields, all strings: ``url`` (v0.11: one broker ``host:port``; here also a comma list of
bootstrap brokers), ``topic``, ``partition`` (parses as an int32), ``backoff`` (see ``common.retry``).
Without a consumer group the source reads that one partition from its newest offset, as v0.11 did.

Ours, each opt-in: ``consumerGroup`` (``groupName``; ``oldest`` to start a group without a committed
offset at the oldest record rather than the newest; ``sessionTimeout``, 10s), whose offsets are
committed only once the client has delivered; ``tls`` (see ``common.tls``); ``sasl`` (``mechanism``
PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, ``username`` and ``password`` through secret references, see
``common.secrets``).
Unknown fields are an error; every bad field is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.config_yaml import load_fields, show
from common.durations import DurationError, parse_duration_ns
from common.errors import ConfigError
from common.retry import Backoff
from common.secrets import SecretRef, parse_secret, parse_username
from common.tls import TlsFiles, parse_tls

V011_FIELDS = ("url", "topic", "partition", "backoff")
FIELDS = (*V011_FIELDS, "consumerGroup", "tls", "sasl")
GROUP_FIELDS = ("groupName", "oldest", "sessionTimeout")
DEFAULT_SESSION_TIMEOUT = 10.0
"""Kafka's own default: a member silent this long (a crashed gateway) loses its partitions."""
MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT = 1.0, 300.0
SASL_FIELDS = ("mechanism", "username", "password")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
INT32 = (-(2**31), 2**31 - 1)

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
"""Kafka's own rule for topic names (``.`` and ``..`` alone are not allowed either)."""
_GROUP = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))$")


@dataclass(frozen=True)
class Group:
    """A consumer group: partitions shared among its members, offsets committed after delivery."""

    name: str
    """The group id; sources (or replicas) with one name share the topic's partitions."""
    oldest: bool = False
    """Where a group without a committed offset starts: the oldest record (True) or the newest."""
    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    """Seconds a member may go silent before the group gives its partitions to the others; heartbeats
    and rebalances are paced from it."""


@dataclass(frozen=True)
class Sasl:
    """SASL authentication (over TLS when ``tls`` is given)."""

    mechanism: str
    """One of ``MECHANISMS``."""
    username: str | SecretRef
    """The user name, as text or a secret reference."""
    password: SecretRef
    """The password, always a secret reference."""


@dataclass(frozen=True)
class KafkaConfig:
    """A validated Kafka source."""

    url: str
    """As configured."""
    brokers: tuple[str, ...]
    """The bootstrap brokers, ``host:port`` each."""
    topic: str
    """The topic read."""
    partition: int | None = None
    """The one partition read without a group; None with a group (it assigns partitions)."""
    backoff: Backoff = field(default_factory=Backoff)
    """Between attempts to connect; forever, capped at 60 s, unless ``steps`` says otherwise."""
    group: Group | None = None
    """The consumer group, when set."""
    tls: TlsFiles | None = None
    """TLS files, when given (TLS is on whenever ``tls`` is present, even as ``{}``)."""
    sasl: Sasl | None = None
    """SASL, when given."""

    @property
    def security_protocol(self) -> str:
        """What aiokafka calls the combination: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        if self.sasl is not None:
            return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"
        return "SSL" if self.tls is not None else "PLAINTEXT"


def parse(data: str) -> KafkaConfig:
    """Parse the YAML ``data`` of one Kafka source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="kafka")
    brokers = _brokers(raw.get("url"), problems)
    topic = _topic(raw.get("topic"), problems)
    try:
        backoff = Backoff.from_config(raw.get("backoff"))
    except ConfigError as exc:
        problems.update({name: "; ".join(msgs) for name, msgs in exc.problems.items()})
        backoff = Backoff()
    group = _group(raw.get("consumerGroup"), problems)
    partition = _partition(raw.get("partition"), raw.get("consumerGroup") is not None, problems)
    tls = parse_tls(raw.get("tls"), problems)
    sasl = _sasl(raw.get("sasl"), problems)
    if problems:
        raise ConfigError(problems)
    return KafkaConfig(str(raw["url"]), brokers, topic, partition, backoff, group, tls, sasl)


def _brokers(value: Any, problems: dict[str, str]) -> tuple[str, ...]:
    if value is None or value == "":
        problems["url"] = "url must be specified"
        return ()
    if not isinstance(value, str):
        problems["url"] = f"must be a string such as kafka:9092 (or a comma list), got {show(value)}"
        return ()
    brokers = tuple(part.strip() for part in value.split(","))
    for broker in brokers:
        host, sep, port = broker.rpartition(":")
        if not sep or not _HOST.match(host) or not (port.isascii() and port.isdigit()):
            problems["url"] = f"{broker!r} must be host:port (a comma list for several brokers)"
            return ()
        if not 1 <= int(port) <= 65535:
            problems["url"] = f"{broker!r}: the port must be from 1 to 65535"
            return ()
    return brokers


def _topic(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["topic"] = "topic must be specified"
        return ""
    if not isinstance(value, str) or not _TOPIC.match(value) or value in (".", ".."):
        problems["topic"] = (
            f"must be a Kafka topic name (letters, digits, ., _ and -; at most 249), got {show(value)}"
        )
        return ""
    return value


def _partition(value: Any, grouped: bool, problems: dict[str, str]) -> int | None:
    if grouped:
        if value is not None:
            problems["partition"] = "does not apply with consumerGroup: the group assigns partitions"
        return None
    if value is None or value == "":
        problems["partition"] = "partition must be specified"
        return None
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text) or not INT32[0] <= int(text) <= INT32[1]:
        problems["partition"] = f"must be a partition number (an int32, as a string), got {show(value)}"
        return None
    number = int(text)
    if number < 0:
        problems["partition"] = f"must be 0 or more, got {number}"
        return None
    return number


def _group(value: Any, problems: dict[str, str]) -> Group | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["consumerGroup"] = "must be a mapping with groupName (and oldest: true|false)"
        return None
    for key in value:
        if key not in GROUP_FIELDS:
            problems[f"consumerGroup.{key}"] = f"unknown field (known fields: {', '.join(GROUP_FIELDS)})"
    name = value.get("groupName")
    good_name = isinstance(name, str) and bool(_GROUP.match(name)) and bool(name.strip())
    if not good_name:
        problems["consumerGroup.groupName"] = (
            "groupName must be specified" if name is None else f"must be a group id, got {show(name)}"
        )
    oldest = value.get("oldest", False)
    if not isinstance(oldest, bool):
        problems["consumerGroup.oldest"] = f"must be true or false, got {show(oldest)}"
    session = _session_timeout(value.get("sessionTimeout"), problems)
    if not good_name or not isinstance(oldest, bool):
        return None
    return Group(str(name), oldest, session)


def _session_timeout(value: Any, problems: dict[str, str]) -> float:
    if value is None:
        return DEFAULT_SESSION_TIMEOUT
    field_name = "consumerGroup.sessionTimeout"
    if not isinstance(value, str):
        problems[field_name] = f"must be a duration such as 10s, got {show(value)}"
        return DEFAULT_SESSION_TIMEOUT
    try:
        seconds = parse_duration_ns(value) / 1e9
    except DurationError as exc:
        problems[field_name] = str(exc)
        return DEFAULT_SESSION_TIMEOUT
    if not MIN_SESSION_TIMEOUT <= seconds <= MAX_SESSION_TIMEOUT:
        problems[field_name] = f"must be from 1s to 5m, got {value!r}"
        return DEFAULT_SESSION_TIMEOUT
    return seconds


def _sasl(value: Any, problems: dict[str, str]) -> Sasl | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["sasl"] = "must be a mapping with mechanism, username and password"
        return None
    for key in value:
        if key not in SASL_FIELDS:
            problems[f"sasl.{key}"] = f"unknown field (known fields: {', '.join(SASL_FIELDS)})"
    mechanism = value.get("mechanism", "PLAIN")
    if mechanism not in MECHANISMS:
        problems["sasl.mechanism"] = f"must be one of {', '.join(MECHANISMS)}, got {show(mechanism)}"
    user = parse_username(value.get("username"), "sasl.username", problems)
    password = parse_secret(value.get("password"), "sasl.password", problems)
    for name, given in (("username", user), ("password", password)):
        if value.get(name) is None:
            problems[f"sasl.{name}"] = f"{name} must be specified"
        elif given is None and not any(key.startswith(f"sasl.{name}") for key in problems):
            problems[f"sasl.{name}"] = "must be a secret reference"
    if user is None or password is None or mechanism not in MECHANISMS:
        return None
    return Sasl(str(mechanism), user, password)
