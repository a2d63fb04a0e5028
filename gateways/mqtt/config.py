"""The MQTT event-source config (the v0.11 schema, plus opt-in fields), validated.

v0.11 fields: ``url`` (``tcp://``, ``ssl://``, ``ws://``, ``wss://`` as paho takes them; also
``mqtt://`` and ``mqtts://``), ``topic``, ``clientId`` (all required), ``backoff`` (see
``common.retry``). QoS 0 by default, as v0.11 meant (v0.11 never subscribed at all).

Ours, each opt-in: ``qos`` (0, 1 or 2), ``protocol`` (``3.1.1``, the default, or ``5``),
``persistentSession`` (clean start off, with ``sessionExpiry`` under MQTT 5: QoS 1/2 messages
published while the source is disconnected are kept by the broker and arrive after it reconnects),
``username`` + ``password`` (secret references, see ``common.secrets``), ``tls`` (see ``common.tls``).
Wildcard topics (``+``, ``#``) and MQTT 5 shared subscriptions (``$share/<group>/<filter>``) are
topics like any other. Unknown fields are an error; every bad field is reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from common.config_yaml import load_fields, show
from common.durations import DurationError, parse_duration_ns
from common.errors import ConfigError
from common.retry import Backoff
from common.secrets import SecretRef, parse_secret, parse_username, redact_url
from common.tls import TlsFiles, parse_tls

V011_FIELDS = ("url", "topic", "clientId", "backoff")
FIELDS = (
    *V011_FIELDS,
    "qos",
    "protocol",
    "persistentSession",
    "sessionExpiry",
    "username",
    "password",
    "tls",
)
SCHEMES = {"tcp": 1883, "mqtt": 1883, "ssl": 8883, "mqtts": 8883, "ws": 80, "wss": 443}
TLS_SCHEMES = ("ssl", "mqtts", "wss")
PROTOCOLS = ("3.1.1", "5")
DEFAULT_SESSION_EXPIRY = 3600.0
"""Seconds the broker keeps a persistent MQTT 5 session after the source disconnects."""
MAX_SESSION_EXPIRY = 2**32 - 2
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_SHARE = re.compile(r"^\$share/([^/+#]+)/(.+)$")


@dataclass(frozen=True)
class MqttConfig:
    """A validated MQTT source."""

    url: str
    """As configured (may hold credentials: show ``display_url``)."""
    scheme: str
    host: str
    port: int
    path: str
    """The WebSocket path (``ws://``, ``wss://``), else ""."""
    topic: str
    client_id: str
    backoff: Backoff = field(default_factory=Backoff)
    qos: int = 0
    protocol: str = "3.1.1"
    persistent: bool = False
    """Clean start off: the broker keeps the subscription and queues QoS 1/2 messages meanwhile."""
    session_expiry: float = DEFAULT_SESSION_EXPIRY
    username: str | SecretRef | None = None
    password: SecretRef | None = None
    tls: TlsFiles | None = None

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or self.scheme in TLS_SCHEMES

    @property
    def transport(self) -> str:
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"


def parse(data: str) -> MqttConfig:
    """Parse the YAML ``data`` of one MQTT source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="mqtt")
    scheme, host, port, path = _url(raw.get("url"), problems)
    topic = _topic(raw.get("topic"), problems)
    client_id = raw.get("clientId")
    if client_id is None or client_id == "":
        problems["clientId"] = "client id must be specified"
    elif not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
        problems["clientId"] = (
            f"must be printable ASCII without spaces, 1 to 256 characters, got {show(client_id)}"
        )
    try:
        backoff = Backoff.from_config(raw.get("backoff"))
    except ConfigError as exc:
        problems.update({name: "; ".join(msgs) for name, msgs in exc.problems.items()})
        backoff = Backoff()
    qos = raw.get("qos", 0)
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        problems["qos"] = f"must be 0, 1 or 2, got {show(qos)}"
        qos = 0
    protocol = str(raw.get("protocol", "3.1.1"))
    if protocol not in PROTOCOLS or isinstance(raw.get("protocol"), float):
        problems["protocol"] = f"must be 3.1.1 or 5 (as a string), got {show(raw.get('protocol'))}"
        protocol = "3.1.1"
    persistent = raw.get("persistentSession", False)
    if not isinstance(persistent, bool):
        problems["persistentSession"] = f"must be true or false, got {show(persistent)}"
        persistent = False
    expiry = _expiry(raw, persistent, protocol, problems)
    username = parse_username(raw.get("username"), "username", problems)
    password = parse_secret(raw.get("password"), "password", problems)
    if "password" in raw and "username" not in raw:
        problems["username"] = "is required with password"
    if "username" in raw and host and "@" in urlsplit(str(raw.get("url"))).netloc:
        problems["url"] = "holds credentials, and so does username: give them once"
    tls = parse_tls(raw.get("tls"), problems)
    if tls is not None and scheme and scheme not in TLS_SCHEMES:
        problems["tls"] = f"needs a TLS url (ssl://, mqtts:// or wss://), not {scheme}://"
    if problems:
        raise ConfigError(problems)
    return MqttConfig(
        str(raw["url"]),
        scheme,
        host,
        port,
        path,
        topic,
        str(client_id),
        backoff,
        int(qos),
        protocol,
        persistent,
        expiry,
        username,
        password,
        tls,
    )


def _url(value: Any, problems: dict[str, str]) -> tuple[str, str, int, str]:
    if value is None or value == "":
        problems["url"] = "url must be specified"
        return "", "", 0, ""
    if not isinstance(value, str):
        problems["url"] = f"must be a string such as tcp://host:1883, got {show(value)}"
        return "", "", 0, ""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        problems["url"] = f"is not a valid URL: {redact_url(str(exc))}"
        return "", "", 0, ""
    if parts.scheme not in SCHEMES or not parts.hostname:
        problems["url"] = f"{redact_url(value)!r} must be {', '.join(f'{s}://' for s in SCHEMES)}host[:port]"
        return "", "", 0, ""
    if port == 0:
        problems["url"] = f"{redact_url(value)!r} must have a port from 1 to 65535"
        return "", "", 0, ""
    websocket = parts.scheme in ("ws", "wss")
    if (parts.path not in ("", "/") and not websocket) or parts.query or parts.fragment:
        problems["url"] = f"{redact_url(value)!r} must name a broker only (a path only for ws:// and wss://)"
        return "", "", 0, ""
    return parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], parts.path if websocket else ""


def _topic(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["topic"] = "topic must be specified"
        return ""
    if not isinstance(value, str) or "\x00" in value or len(value.encode()) > 65535:
        problems["topic"] = f"must be an MQTT topic filter, got {show(value)}"
        return ""
    share = _SHARE.match(value)
    levels = (share.group(2) if share else value).split("/")
    bad_wildcard = any(
        ("#" in level and (level != "#" or at != len(levels) - 1)) or ("+" in level and level != "+")
        for at, level in enumerate(levels)
    )
    if bad_wildcard or (value.startswith("$share/") and not share):
        problems["topic"] = (
            "must be an MQTT topic filter (+ for one level, # last; $share/<group>/<filter> to share), "
            f"got {show(value)}"
        )
    return value


def _expiry(raw: Mapping[str, Any], persistent: bool, protocol: str, problems: dict[str, str]) -> float:
    value = raw.get("sessionExpiry")
    if value is None:
        return DEFAULT_SESSION_EXPIRY
    if not persistent or protocol != "5":
        problems["sessionExpiry"] = "applies only with persistentSession: true and protocol: '5'"
        return DEFAULT_SESSION_EXPIRY
    if not isinstance(value, str):
        problems["sessionExpiry"] = f"must be a duration such as 1h, got {show(value)}"
        return DEFAULT_SESSION_EXPIRY
    try:
        seconds = parse_duration_ns(value) / 1e9
    except DurationError as exc:
        problems["sessionExpiry"] = str(exc)
        return DEFAULT_SESSION_EXPIRY
    if not 1 <= seconds <= MAX_SESSION_EXPIRY:
        problems["sessionExpiry"] = f"must be from 1s to about 136 years, got {value!r}"
        return DEFAULT_SESSION_EXPIRY
    return seconds


def clashes(
    name: str, config: MqttConfig, others: Mapping[str, MqttConfig], reserved: frozenset[int]
) -> dict[str, str]:
    """Two sources with one client id on one broker disconnect each other in a loop: refused."""
    for other_name, other in others.items():
        if other.client_id == config.client_id and (other.host, other.port) == (config.host, config.port):
            return {"clientId": f"{config.client_id!r} is the client id of event source {other_name!r} too"}
    return {}
