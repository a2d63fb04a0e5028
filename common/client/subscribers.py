"""Subscriber URLs: where the client delivers events, and in which CloudEvents format.

Accepted forms, each with an optional ``?format=binary|structured|legacy`` (else the default format)
and an optional ``inflight=N`` (see ``SubscriberSpec.inflight``):

* ``http://host[:port]/path`` and ``https://...``: one POST per event.
* ``nats://host[:port][/subject]``: a core NATS publish (at most once), flushed per batch.
* ``jetstream://host[:port][/subject]``: a JetStream publish awaiting the stream's ack (at least once,
  de-duplicated by event id). The client never creates streams: an operator declares them.

The subject defaults to ``<gateway>:<source>``, the subject v0.11 published on; a subject in the URL
is a template that may use ``{gateway}`` and ``{source}`` (``events.{gateway}.{source}``).

NATS Streaming (STAN, v0.11's ``Streaming`` type) is not offered: it is dead upstream and its servers
are end-of-life. JetStream is its successor and gives the same at-least-once delivery.

Credentials may sit in the URL (``https://user:pass@host``, ``nats://token@host``); ``display`` is
the URL with them replaced by ``***`` and is what logs, metrics and status show.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from common.client.model import Format

SCHEMES = ("http", "https", "nats", "jetstream")
"""The subscriber URL schemes the client delivers to."""
NATS_DEFAULT_PORT = 4222
"""The port of a ``nats://`` or ``jetstream://`` URL that names none."""

OUR_PARAMS = frozenset({"format", "inflight"})
"""Query parameters the client reads itself; an HTTP subscriber's URL is sent without them."""
MAX_INFLIGHT = 256
"""The most deliveries of one source a subscriber may have in flight."""

_SECRET_PARAMS = ("token", "access_token", "api_key", "apikey", "key", "password", "secret", "sig", "auth")
_USERINFO = re.compile(r"(?<=//)([^/@?#]*)@")
_SECRET_QUERY = re.compile(rf"([?&](?:{'|'.join(_SECRET_PARAMS)})=)[^&#]*", re.IGNORECASE)
_SUBJECT_FIELDS = frozenset({"gateway", "source"})


class SubscriberError(ValueError):
    """A subscriber URL cannot be used; the message names the (redacted) URL and the problem."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = redact(url)
        self.problem = problem
        super().__init__(f"subscriber {self.url!r}: {problem}")


@dataclass(frozen=True)
class SubscriberSpec:
    """One parsed subscriber URL."""

    url: str
    """The URL as configured (may hold credentials: never log it, log ``display``)."""
    scheme: str
    """``http``, ``https``, ``nats`` or ``jetstream``."""
    address: str
    """Where to connect: the HTTP URL without ``format``, or ``nats://[credentials@]host:port``."""
    subject_template: str | None
    """The NATS subject template from the URL path; None means ``<gateway>:<source>``."""
    format: Format
    """The CloudEvents format this subscriber receives."""
    display: str
    """The URL with any password or token replaced by ``***``, for logs, metrics and status."""
    inflight: int = 1
    """Deliveries of one event source in flight at once (``?inflight=N``, 1-256). 1, the default, keeps
    each source's events in order, one at a time. More gives up that order for throughput, for
    subscribers that handle each event on its own (as sensors do): a slow answer no longer holds up
    the events behind it."""

    @property
    def is_nats(self) -> bool:
        """True for ``nats://`` and ``jetstream://`` subscribers."""
        return self.scheme in ("nats", "jetstream")


def redact(url: str) -> str:
    """``url`` with its password (or bare token) and secret-looking query values replaced by ``***``."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match.group(1).partition(":")
        return f"{user}:***@" if colon else "***@"

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(userinfo, url, count=1))


def parse_subscriber(url: str, default_format: Format) -> SubscriberSpec:
    """Parse one subscriber URL; ``SubscriberError`` names the URL and what is wrong with it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise SubscriberError(url, f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        got = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise SubscriberError(
            url, f"{got}; expected http, https, nats or jetstream (NATS Streaming is not supported)"
        )
    if not parts.hostname:
        raise SubscriberError(url, "no host")
    params = parse_qsl(parts.query, keep_blank_values=True)
    fmt = _format(url, [v for k, v in params if k == "format"], default_format)
    inflight = _inflight(url, [v for k, v in params if k == "inflight"])
    rest = [(k, v) for k, v in params if k not in OUR_PARAMS]
    if scheme in ("http", "https"):
        query = "&".join(p for p in parts.query.split("&") if p and p.partition("=")[0] not in OUR_PARAMS)
        address = urlunsplit((scheme, parts.netloc, parts.path or "/", query, ""))
        return SubscriberSpec(url, scheme, address, None, fmt, redact(url), inflight)
    if rest:
        raise SubscriberError(
            url, f"unknown parameter {rest[0][0]!r}; only 'format' and 'inflight' are accepted"
        )
    subject = _subject_template(url, parts)
    address = f"nats://{_userinfo(parts)}{_host(parts.hostname)}:{port or NATS_DEFAULT_PORT}"
    return SubscriberSpec(url, scheme, address, subject, fmt, redact(url), inflight)


def subject_for(spec: SubscriberSpec, gateway: str, source: str) -> str:
    """The NATS subject for events of ``source``: the template filled in, else ``<gateway>:<source>``."""
    if spec.subject_template is None:
        return f"{gateway}:{source}"
    return spec.subject_template.format(gateway=gateway, source=source)


def _format(url: str, values: list[str], default: Format) -> Format:
    if not values:
        return default
    if len(values) > 1:
        raise SubscriberError(url, "'format' is given more than once")
    try:
        return Format(values[0].lower())
    except ValueError:
        allowed = ", ".join(f.value for f in Format)
        raise SubscriberError(url, f"unknown format {values[0]!r}; expected one of {allowed}") from None


def _inflight(url: str, values: list[str]) -> int:
    if not values:
        return 1
    if len(values) > 1:
        raise SubscriberError(url, "'inflight' is given more than once")
    if not (values[0].isascii() and values[0].isdigit()) or not 1 <= int(values[0]) <= MAX_INFLIGHT:
        raise SubscriberError(
            url, f"inflight {values[0]!r}: expected a whole number from 1 to {MAX_INFLIGHT}"
        )
    return int(values[0])


def _subject_template(url: str, parts: SplitResult) -> str | None:
    subject = parts.path.lstrip("/")
    if not subject:
        return None
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(subject) if name is not None}
    except ValueError as exc:
        raise SubscriberError(url, f"bad subject template {subject!r}: {exc}") from exc
    unknown = sorted(fields - _SUBJECT_FIELDS)
    if unknown:
        raise SubscriberError(
            url, f"subject template {subject!r} uses {unknown[0]!r}; only {{gateway}} and {{source}} exist"
        )
    if any(c.isspace() for c in subject) or any(t in ("*", ">") for t in subject.split(".")):
        raise SubscriberError(url, f"subject {subject!r} has whitespace or a wildcard")
    return subject


def _userinfo(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""


def _host(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname
