"""The AMQP event-source config (the v0.11 schema, plus opt-in fields), validated.

v0.11 fields: ``url`` (``amqp://`` or ``amqps://``), ``exchangeName``, ``exchangeType``, ``routingKey``
(all required), ``backoff`` (see ``common.retry``), ``rateLimit`` + ``ratePeriod`` (both or neither;
v0.11 defined that check and never called it). Without options the source does as v0.11 did: an
exclusive, server-named queue bound to the exchange, taken as it comes.

Ours, each opt-in: ``queueDeclare`` (a named queue, durable by default, with its arguments: messages
published while the gateway is down wait in it, and each is acked only once the client has
delivered it); ``exchangeDeclare`` (how the exchange is declared); ``username`` + ``password`` (secret
references, see ``common.secrets``; credentials inline in the URL are accepted and redacted); ``tls``
(see ``common.tls``; ``amqps://`` uses TLS with the system's CAs without it). Unknown fields are an
error; every bad field is reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from common.config_yaml import load_fields, show
from common.errors import ConfigError
from common.retry import Backoff
from common.secrets import SecretRef, parse_secret, parse_username, redact_url
from common.tls import TlsFiles, parse_tls

V011_FIELDS = ("url", "exchangeName", "exchangeType", "routingKey", "backoff", "rateLimit", "ratePeriod")
FIELDS = (*V011_FIELDS, "queueDeclare", "exchangeDeclare", "username", "password", "tls")
QUEUE_FIELDS = ("name", "durable", "autoDelete", "exclusive", "arguments")
EXCHANGE_FIELDS = ("durable", "autoDelete", "internal")
EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
SCHEMES = ("amqp", "amqps")
UINT32 = 2**32 - 1
MAX_NAME = 255
"""AMQP 0-9-1 short strings: exchange and queue names, routing keys."""
_ARGUMENT_VALUE = (str, int, float, bool)


@dataclass(frozen=True)
class Queue:
    """A named queue: it outlives the gateway, and each message is acked only once delivered."""

    name: str
    durable: bool = True
    """Kept across a broker restart (with persistent messages)."""
    auto_delete: bool = False
    """Deleted by the broker once its last consumer goes."""
    exclusive: bool = False
    """Used by this connection only, deleted when it closes."""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """``x-`` arguments, e.g. ``x-queue-type: quorum``, ``x-message-ttl``, ``x-dead-letter-exchange``."""


@dataclass(frozen=True)
class Exchange:
    """How the exchange is declared (v0.11: durable, not auto-deleted)."""

    durable: bool = True
    auto_delete: bool = False
    internal: bool = False


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` messages in each ``period`` seconds."""

    limit: int
    period: int


@dataclass(frozen=True)
class AmqpConfig:
    """A validated AMQP source."""

    url: str
    """As configured (may hold credentials: show ``display_url``)."""
    exchange_name: str
    exchange_type: str
    routing_key: str
    backoff: Backoff = field(default_factory=Backoff)
    rate: RateLimit | None = None
    queue: Queue | None = None
    """A named queue; None: v0.11's exclusive server-named one."""
    exchange: Exchange = field(default_factory=Exchange)
    username: str | SecretRef | None = None
    password: SecretRef | None = None
    tls: TlsFiles | None = None

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or self.url.startswith("amqps://")


def parse(data: str) -> AmqpConfig:
    """Parse the YAML ``data`` of one AMQP source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="amqp")
    url = _url(raw.get("url"), problems)
    names = {
        key: _name(raw.get(key), key, message, problems)
        for key, message in (
            ("exchangeName", "exchange name must be specified"),
            ("routingKey", "routing key must be specified"),
        )
    }
    kind = raw.get("exchangeType")
    if kind is None or kind == "":
        problems["exchangeType"] = "exchange type must be specified"
    elif kind not in EXCHANGE_TYPES:
        problems["exchangeType"] = f"must be one of {', '.join(EXCHANGE_TYPES)}, got {show(kind)}"
    try:
        backoff = Backoff.from_config(raw.get("backoff"))
    except ConfigError as exc:
        problems.update({name: "; ".join(msgs) for name, msgs in exc.problems.items()})
        backoff = Backoff()
    rate = _rate(raw, problems)
    queue = _queue(raw.get("queueDeclare"), problems)
    if "queueDeclare" in raw and raw["queueDeclare"] is None:
        problems["queueDeclare"] = "is empty: give the queue's name (queueDeclare: {name: ...})"
    exchange = _exchange(raw.get("exchangeDeclare"), problems)
    username = parse_username(raw.get("username"), "username", problems)
    password = parse_secret(raw.get("password"), "password", problems)
    if ("username" in raw) != ("password" in raw):
        missing = "password" if "username" in raw else "username"
        problems[missing] = f"is required with {'username' if missing == 'password' else 'password'}"
    if "username" in raw and url and "@" in urlsplit(url).netloc:
        problems["url"] = "holds credentials, and so do username and password: give them once"
    tls = parse_tls(raw.get("tls"), problems)
    if tls is not None and url.startswith("amqp://"):
        problems["tls"] = "needs an amqps:// url (TLS from the first byte, port 5671 by default)"
    if problems:
        raise ConfigError(problems)
    return AmqpConfig(
        url,
        names["exchangeName"],
        str(kind),
        names["routingKey"],
        backoff,
        rate,
        queue,
        exchange,
        username,
        password,
        tls,
    )


def _url(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["url"] = "url must be specified"
        return ""
    if not isinstance(value, str):
        problems["url"] = f"must be a string such as amqp://host:5672/vhost, got {show(value)}"
        return ""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        problems["url"] = f"is not a valid URL: {redact_url(str(exc))}"
        return ""
    if parts.scheme not in SCHEMES or not parts.hostname:
        problems["url"] = f"{redact_url(value)!r} must be amqp://host[:port][/vhost] or amqps://..."
        return ""
    if port == 0:
        problems["url"] = f"{redact_url(value)!r} must have a port from 1 to 65535"
        return ""
    return value


def _name(value: Any, key: str, missing: str, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems[key] = missing
        return ""
    if not isinstance(value, str) or len(value.encode()) > MAX_NAME:
        problems[key] = f"must be text of at most {MAX_NAME} bytes, got {show(value)}"
        return ""
    return value


def _whole(value: Any, key: str, problems: dict[str, str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= UINT32:
        problems[key] = f"must be a whole number from 1 to {UINT32}, got {show(value)}"
        return 0
    return value


def _rate(raw: Mapping[str, Any], problems: dict[str, str]) -> RateLimit | None:
    given = [key for key in ("rateLimit", "ratePeriod") if raw.get(key) is not None]
    if not given:
        return None
    if len(given) == 1:
        problems[given[0]] = "RateLimit and RatePeriod must be either set or omitted"
        return None
    limit = _whole(raw["rateLimit"], "rateLimit", problems)
    period = _whole(raw["ratePeriod"], "ratePeriod", problems)
    return RateLimit(limit, period) if limit and period else None


def _flags(
    value: Mapping[str, Any], prefix: str, names: dict[str, str], problems: dict[str, str]
) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for key, attribute in names.items():
        given = value.get(key)
        if given is None:
            continue
        if not isinstance(given, bool):
            problems[f"{prefix}.{key}"] = f"must be true or false, got {show(given)}"
            continue
        found[attribute] = given
    return found


def _unknown(value: Mapping[str, Any], prefix: str, known: tuple[str, ...], problems: dict[str, str]) -> None:
    for key in value:
        if key not in known:
            problems[f"{prefix}.{key}"] = f"unknown field (known fields: {', '.join(known)})"


def _queue(value: Any, problems: dict[str, str]) -> Queue | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["queueDeclare"] = (
            "must be a mapping with name (and durable, autoDelete, exclusive, arguments)"
        )
        return None
    _unknown(value, "queueDeclare", QUEUE_FIELDS, problems)
    name = value.get("name")
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name.encode()) > MAX_NAME
        or name.startswith("amq.")
    ):
        problems["queueDeclare.name"] = (
            "name must be specified"
            if name is None
            else f"must be a queue name of at most {MAX_NAME} bytes, not starting with amq., got {show(name)}"
        )
        name = ""
    flags = _flags(
        value,
        "queueDeclare",
        {"durable": "durable", "autoDelete": "auto_delete", "exclusive": "exclusive"},
        problems,
    )
    arguments = value.get("arguments", {})
    if not isinstance(arguments, Mapping) or not all(
        isinstance(k, str) and isinstance(v, _ARGUMENT_VALUE) for k, v in arguments.items()
    ):
        problems["queueDeclare.arguments"] = (
            f"must be a mapping of names to text, numbers or true/false, got {show(arguments)}"
        )
        arguments = {}
    return Queue(name, **flags, arguments=dict(arguments)) if name else None


def _exchange(value: Any, problems: dict[str, str]) -> Exchange:
    if value is None:
        return Exchange()
    if not isinstance(value, Mapping):
        problems["exchangeDeclare"] = "must be a mapping with durable, autoDelete and internal"
        return Exchange()
    _unknown(value, "exchangeDeclare", EXCHANGE_FIELDS, problems)
    flags = _flags(
        value,
        "exchangeDeclare",
        {"durable": "durable", "autoDelete": "auto_delete", "internal": "internal"},
        problems,
    )
    return Exchange(**flags)
