"""The NATS event-source config (the v0.11 schema, plus opt-in fields), validated.

v0.11 fields: ``url`` and ``subject`` (both required), ``backoff`` (the v0.11 object, see
``common.retry``). Ours, each opt-in: ``queueGroup``, ``jetStream`` (a durable pull consumer acked only
once the client has delivered), ``token``, ``username`` + ``password``, ``nkey`` and ``credentials``
(secret references, see ``common.secrets``), and ``tls`` (CA, certificate and key files). Unknown
fields are an error. Every bad field is reported at once; a URL is only ever shown redacted.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from common.config_yaml import load_fields, show
from common.durations import DurationError, parse_duration_ns
from common.errors import ConfigError
from common.retry import Backoff
from common.secrets import SecretRef, parse_secret, parse_username, redact_url
from common.server.window import DEFAULT_MAX_EVENTS
from common.tls import TlsFiles, parse_tls

V011_FIELDS = ("url", "subject", "backoff")
AUTH_FIELDS = ("token", "username", "password", "nkey", "credentials")
FIELDS = (*V011_FIELDS, "queueGroup", "jetStream", *AUTH_FIELDS, "tls")
JETSTREAM_FIELDS = (
    "stream",
    "durable",
    "deliverPolicy",
    "startSequence",
    "startTime",
    "ackWait",
    "maxAckPending",
)
SCHEMES = ("nats", "tls")
"""What go-nats 1.7.2 (v0.11's client) and nats-py both take: plain NATS, and TLS from the first byte
of the handshake's upgrade."""
DEFAULT_PORT = 4222

DELIVER_POLICIES = ("all", "new", "last", "last_per_subject", "by_start_sequence", "by_start_time")
"""JetStream's own names (``deliver_policy``): where a new durable starts in the stream."""
DEFAULT_ACK_WAIT = 30.0
"""JetStream's own default: a message not acked within 30 s is delivered again. While the gateway
holds a message (its client has not delivered it yet), it tells JetStream so every half ``ackWait``,
so a slow subscriber does not cause redeliveries; after a crash, redelivery comes ``ackWait`` later."""
MIN_ACK_WAIT, MAX_ACK_WAIT = 1.0, 24 * 3600.0
DEFAULT_MAX_ACK_PENDING = DEFAULT_MAX_EVENTS
"""The client's default window (1,000 events): the gateway never holds more unacknowledged messages
than the window, the stream's buffer and one fetch together, so a larger value is never reached."""
MAX_ACK_PENDING = 1_000_000

_SUBJECT_TOKEN = re.compile(r"^[^\s.]+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
"""A JetStream stream or consumer name: no spaces, ``.``, ``*``, ``>``, path separators."""
_QUEUE = re.compile(r"^[^\s]{1,255}$")


@dataclass(frozen=True)
class JetStream:
    """A durable JetStream pull consumer on ``subject``: each message is acked once delivered."""

    stream: str = ""
    """The stream holding ``subject``; "" finds it by the subject at start."""
    durable: str = ""
    """The durable consumer's name; "" derives one from the event-source name (``NatsConfig.durable_for``)."""
    deliver_policy: str = "all"
    """Where a new durable starts (one of ``DELIVER_POLICIES``); an existing durable keeps its place."""
    start_sequence: int = 0
    """The first stream sequence, with ``by_start_sequence``."""
    start_time: datetime | None = None
    """The first message time, with ``by_start_time`` (aware)."""
    ack_wait: float = DEFAULT_ACK_WAIT
    """Seconds JetStream waits for an ack before it delivers a message again."""
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING
    """Messages the consumer hands out unacknowledged at most."""


@dataclass(frozen=True)
class Auth:
    """How the connection authenticates: at most one of token, user and password, nkey, credentials."""

    token: SecretRef | None = None
    """A token (``authorization { token: ... }`` on the server)."""
    username: str | SecretRef | None = None
    """A user name, as text or a secret reference (a ``kubernetes.io/basic-auth`` Secret has both)."""
    password: SecretRef | None = None
    """The user's password."""
    nkey: SecretRef | None = None
    """An nkey seed (``SU...``), as a file or a variable."""
    credentials: SecretRef | None = None
    """A ``.creds`` file (user JWT and nkey seed), as a file or a variable holding its text."""

    @property
    def method(self) -> str:
        """``token``, ``user``, ``nkey``, ``credentials`` or ``""`` (none, or in the URL)."""
        for name in ("token", "nkey", "credentials"):
            if getattr(self, name) is not None:
                return name
        return "user" if self.username is not None else ""


@dataclass(frozen=True)
class NatsConfig:
    """A validated NATS source."""

    url: str
    """As configured (may hold credentials: show ``display_url``)."""
    servers: tuple[str, ...]
    """Each server URL of ``url`` (go-nats takes a comma-separated list)."""
    subject: str
    """The subject subscribed to; wildcards ``*`` and ``>`` allowed."""
    backoff: Backoff = field(default_factory=Backoff)
    """Between attempts to connect and subscribe; forever, capped at 60 s, unless ``steps`` says otherwise."""
    queue_group: str = ""
    """When set, sources (and other clients) in the same group share the messages: each goes to one."""
    jetstream: JetStream | None = None
    """When set, read through a JetStream durable instead of a core subscription."""
    auth: Auth = field(default_factory=Auth)
    """How the connection authenticates."""
    tls: TlsFiles | None = None
    """TLS files, when given."""

    @property
    def display_url(self) -> str:
        """``url`` with any inline credentials replaced by ``***``."""
        return redact_url(self.url)

    def durable_for(self, source: str) -> str:
        """The durable's name for event source ``source``: ``jetstream.durable``, else the source name
        with what a consumer name cannot hold replaced by ``_``."""
        if self.jetstream is not None and self.jetstream.durable:
            return self.jetstream.durable
        return re.sub(r"[^A-Za-z0-9_-]", "_", source)[:255] or "gateway"


def parse(data: str) -> NatsConfig:
    """Parse the YAML ``data`` of one NATS source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="nats")
    if not raw:
        raise ConfigError({"data": "configuration must be non empty"})
    servers = _url(raw.get("url"), problems)
    subject = _subject(raw.get("subject"), problems)
    try:
        backoff = Backoff.from_config(raw.get("backoff"))
    except ConfigError as exc:
        problems.update({name: "; ".join(msgs) for name, msgs in exc.problems.items()})
        backoff = Backoff()
    queue = raw.get("queueGroup")
    if queue is not None and (not isinstance(queue, str) or not _QUEUE.match(queue)):
        problems["queueGroup"] = f"must be a queue group name without spaces, got {show(queue)}"
    jetstream = _jetstream(raw.get("jetStream"), problems)
    if jetstream is not None and queue is not None:
        problems["queueGroup"] = (
            "does not apply with jetStream: sources sharing one durable already share its messages"
        )
    auth = _auth(raw, problems)
    if auth.method and any(_has_userinfo(server) for server in servers):
        problems["url"] = f"holds credentials, and so does {auth.method!r}: give them once"
    tls = parse_tls(raw.get("tls"), problems)
    if problems:
        raise ConfigError(problems)
    return NatsConfig(str(raw["url"]), servers, subject, backoff, queue or "", jetstream, auth, tls)


def _url(value: Any, problems: dict[str, str]) -> tuple[str, ...]:
    if value is None or value == "":
        problems["url"] = "url must be specified"
        return ()
    if not isinstance(value, str):
        problems["url"] = f"must be a string such as nats://host:4222, got {type(value).__name__}"
        return ()
    servers = tuple(part.strip() for part in value.split(","))
    for server in servers:
        problem = _server_problem(server)
        if problem:
            problems["url"] = f"{redact_url(server)!r} {problem}"
            return ()
    return servers


def _server_problem(server: str) -> str:
    """What is wrong with one server URL, or ""."""
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL: {redact_url(str(exc))}"
    if parts.scheme not in SCHEMES or not parts.hostname:
        return f"must be {' or '.join(f'{s}://host[:port]' for s in SCHEMES)}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must name a server only (no path, query or fragment)"
    if port == 0:
        return "must have a port from 1 to 65535"
    return ""


def _has_userinfo(server: str) -> bool:
    return "@" in urlsplit(server).netloc


def _subject(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["subject"] = "subject must be specified"
        return ""
    if not isinstance(value, str):
        problems["subject"] = f"must be a string, got {type(value).__name__}"
        return ""
    tokens = value.split(".")
    if not all(_SUBJECT_TOKEN.match(token) for token in tokens) or any(
        (">" in token and (token != ">" or at != len(tokens) - 1)) or ("*" in token and token != "*")
        for at, token in enumerate(tokens)
    ):
        problems["subject"] = (
            f"must be a NATS subject (dot-separated tokens without spaces; * for one token, > last), "
            f"got {show(value)}"
        )
    return value


def _jetstream(value: Any, problems: dict[str, str]) -> JetStream | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["jetStream"] = f"must be a mapping ({', '.join(JETSTREAM_FIELDS)}; {{}} for the defaults)"
        return None
    for key in value:
        if key not in JETSTREAM_FIELDS:
            problems[f"jetStream.{key}"] = f"unknown field (known fields: {', '.join(JETSTREAM_FIELDS)})"
    names = {}
    for key in ("stream", "durable"):
        name = value.get(key, "")
        if name != "" and (not isinstance(name, str) or not _NAME.match(name)):
            problems[f"jetStream.{key}"] = (
                f"must be a JetStream name (letters, digits, _ and -; no spaces, ., * or >), got {show(name)}"
            )
            name = ""
        names[key] = name
    policy = value.get("deliverPolicy", "all")
    if policy not in DELIVER_POLICIES:
        problems["jetStream.deliverPolicy"] = (
            f"must be one of {', '.join(DELIVER_POLICIES)}, got {show(policy)}"
        )
    sequence = _start_sequence(value, policy, problems)
    start_time = _start_time(value, policy, problems)
    ack_wait = _ack_wait(value.get("ackWait"), problems)
    pending = value.get("maxAckPending", DEFAULT_MAX_ACK_PENDING)
    if isinstance(pending, bool) or not isinstance(pending, int) or not 1 <= pending <= MAX_ACK_PENDING:
        problems["jetStream.maxAckPending"] = (
            f"must be a whole number from 1 to {MAX_ACK_PENDING}, got {show(pending)}"
        )
        pending = DEFAULT_MAX_ACK_PENDING
    return JetStream(names["stream"], names["durable"], str(policy), sequence, start_time, ack_wait, pending)


def _start_sequence(value: Mapping[str, Any], policy: Any, problems: dict[str, str]) -> int:
    sequence = value.get("startSequence")
    if policy == "by_start_sequence" and sequence is None:
        problems["jetStream.startSequence"] = "is required with deliverPolicy: by_start_sequence"
    if sequence is None:
        return 0
    if policy != "by_start_sequence":
        problems["jetStream.startSequence"] = "applies only with deliverPolicy: by_start_sequence"
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        problems["jetStream.startSequence"] = f"must be a stream sequence (1 or more), got {show(sequence)}"
        return 0
    return sequence


def _start_time(value: Mapping[str, Any], policy: Any, problems: dict[str, str]) -> datetime | None:
    given = value.get("startTime")
    if policy == "by_start_time" and given is None:
        problems["jetStream.startTime"] = "is required with deliverPolicy: by_start_time"
    if given is None:
        return None
    if policy != "by_start_time":
        problems["jetStream.startTime"] = "applies only with deliverPolicy: by_start_time"
    moment = given if isinstance(given, datetime) else None
    if isinstance(given, str):
        try:
            moment = datetime.fromisoformat(given.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        problems["jetStream.startTime"] = f"must be an RFC 3339 time with its offset, got {show(given)}"
        return None
    return moment


def _ack_wait(value: Any, problems: dict[str, str]) -> float:
    if value is None:
        return DEFAULT_ACK_WAIT
    if not isinstance(value, str):
        problems["jetStream.ackWait"] = f"must be a duration such as 30s, got {show(value)}"
        return DEFAULT_ACK_WAIT
    try:
        seconds = parse_duration_ns(value) / 1e9
    except DurationError as exc:
        problems["jetStream.ackWait"] = str(exc)
        return DEFAULT_ACK_WAIT
    if not MIN_ACK_WAIT <= seconds <= MAX_ACK_WAIT:
        problems["jetStream.ackWait"] = f"must be from 1s to 24h, got {value!r}"
        return DEFAULT_ACK_WAIT
    return seconds


def _auth(raw: Mapping[str, Any], problems: dict[str, str]) -> Auth:
    token = parse_secret(raw.get("token"), "token", problems)
    user = parse_username(raw.get("username"), "username", problems)
    password = parse_secret(raw.get("password"), "password", problems)
    nkey = parse_secret(raw.get("nkey"), "nkey", problems)
    credentials = parse_secret(raw.get("credentials"), "credentials", problems)
    if "username" in raw and "password" not in raw:
        problems["password"] = "is required with username"
    if "password" in raw and "username" not in raw:
        problems["username"] = "is required with password"
    given = [name for name in ("token", "username", "nkey", "credentials") if name in raw]
    if len(given) > 1:
        for name in given[1:]:
            problems[name] = (
                f"give one way to authenticate: {' and '.join(repr(n) for n in given)} are both set"
            )
    for name in ("nkey", "credentials"):
        if name in raw and importlib.util.find_spec("nkeys") is None:
            problems[name] = (
                "needs the nkeys package, which this gateway server does not have "
                "(pip install 'nats-py[nkeys]'; the gateways/nats image has it)"
            )
    return Auth(token, user, password, nkey, credentials)
