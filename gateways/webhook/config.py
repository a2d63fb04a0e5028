"""The webhook event-source config (the v0.11 schema, plus auth, limits and a read timeout), validated.

v0.11 fields: ``endpoint`` (a leading ``/`` is added; a trailing slash is significant), ``method``,
``port`` (a string or a number), ``serverCertPath`` and ``serverKeyPath`` (TLS when both are given),
``url`` (accepted and ignored, as v0.11 did). Ours: ``maxBodyBytes``, ``readTimeout``, ``bearerToken``,
``signature``, ``rateLimit``, ``maxHeaderBytes``, ``answer`` and ``answerTimeout``. Unknown fields are
an error. Every bad field is reported at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.config_yaml import load_fields
from common.durations import DurationError, format_duration, parse_duration_ns
from common.errors import ConfigError
from common.secrets import SecretRef as SecretRef  # re-exported: the webhook config's own name for it
from common.secrets import parse_secret

METHODS = ("HEAD", "PUT", "CONNECT", "DELETE", "GET", "OPTIONS", "PATCH", "POST", "TRACE")
"""What v0.11 accepted, in its order."""
V011_FIELDS = ("endpoint", "method", "port", "url", "serverCertPath", "serverKeyPath")
FIELDS = (
    *V011_FIELDS,
    "maxBodyBytes",
    "readTimeout",
    "bearerToken",
    "signature",
    "rateLimit",
    "maxHeaderBytes",
    "answer",
    "answerTimeout",
)
ANSWERS = ("written", "delivered")
"""When a caller is answered 200: once the event is written to the stream (the default), or once
every subscriber accepted it (end to end; needs a client that acknowledges)."""
DEFAULT_ANSWER_TIMEOUT = 10.0
MIB = 1024 * 1024
DEFAULT_MAX_BODY = MIB
"""1 MiB: what NATS carries by default (``max_payload``); GitHub caps its payloads at 25 MB, most senders
far below."""
MAX_BODY = 3 * MIB
"""The largest body an event can carry: gRPC refuses messages over 4 MiB by default, and the event also
holds the request's headers (at most 256 KiB of them, see ``handler.MAX_HEADER_BYTES``), path and query."""
DEFAULT_MAX_HEADERS = 8 * 1024
"""8 KiB of forwarded request headers, path and query, as a binary-mode subscriber receives them: with
the event's own attributes that stays under common HTTP servers' limits (Node's is 16 KiB)."""
MIN_HEADERS, MAX_HEADERS = 1024, 256 * 1024
DEFAULT_READ_TIMEOUT = 10.0
"""Seconds a client may take to send its body: generous for a megabyte on a slow link, short enough
that a stalled client does not hold a connection for long."""
MAX_READ_TIMEOUT = 600.0
"""Ten minutes: a body slower than that is a stalled client, not a slow one."""
DEFAULT_SIGNATURE_HEADER = "X-Hub-Signature-256"
"""GitHub's header: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
MAX_RATE = 1_000_000.0

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP header field name (RFC 9110 token)."""
_BAD_PATH_CHARS = re.compile(r"[\s?#\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Signature:
    """An HMAC-SHA256 signature of the raw body, GitHub style: ``<header>: sha256=<hex>``."""

    secret: SecretRef
    """The shared key."""
    header: str = DEFAULT_SIGNATURE_HEADER
    """The header that carries the signature."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per endpoint: ``per_second`` tokens a second, at most ``burst`` at once."""

    per_second: float
    """Sustained requests per second."""
    burst: int
    """Requests allowed at once after a quiet spell (the bucket's size)."""


@dataclass(frozen=True)
class TlsFiles:
    """The server certificate (chain) and key, PEM files mounted in the pod; re-read when they change."""

    cert: str
    """``serverCertPath``."""
    key: str
    """``serverKeyPath``."""


@dataclass(frozen=True)
class WebhookConfig:
    """A validated webhook source: one route, (port, endpoint, method)."""

    endpoint: str
    """The path, always starting with ``/``; ``/a`` and ``/a/`` are different endpoints."""
    method: str
    """The one HTTP method this endpoint takes."""
    port: int
    """The TCP port; every source on a port shares one HTTP server."""
    tls: TlsFiles | None = None
    """TLS when both files are given; one setting per port."""
    max_body_bytes: int = DEFAULT_MAX_BODY
    """Bodies over this many bytes get 413."""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    """Seconds to receive the whole body; 408 when exceeded."""
    bearer_token: SecretRef | None = None
    """When set, requests need ``Authorization: Bearer <token>``."""
    signature: Signature | None = None
    """When set, requests need a valid HMAC-SHA256 signature of the body."""
    rate_limit: RateLimit | None = None
    """When set, requests over the rate get 429."""
    answer: str = "written"
    """``written``: 200 once the event is on the stream. ``delivered``: 200 only once every subscriber
    accepted it, 503 with ``Retry-After`` if that has not happened within ``answer_timeout``."""
    answer_timeout: float = DEFAULT_ANSWER_TIMEOUT
    """Seconds a ``delivered`` answer waits for the subscribers."""
    max_header_bytes: int = DEFAULT_MAX_HEADERS
    """Requests whose forwarded headers, path and query come to more than this many bytes, written as
    the ``ce-*`` headers a subscriber receives, get 431."""

    @property
    def route(self) -> str:
        """``POST /push on port 12000``, for messages."""
        return f"{self.method} {self.endpoint} on port {self.port}"


def parse(data: str) -> WebhookConfig:
    """Parse the YAML ``data`` of one webhook source, or raise ``ConfigError`` naming every bad field."""
    raw, problems = load_fields(data, FIELDS, kind="webhook")
    endpoint = _endpoint(raw.get("endpoint"), problems)
    method = _method(raw.get("method"), problems)
    port = _port(raw.get("port"), problems)
    if raw.get("url") is not None and not isinstance(raw["url"], str):
        problems["url"] = f"must be a string, got {raw['url']!r}"
    tls = _tls(raw.get("serverCertPath"), raw.get("serverKeyPath"), problems)
    max_body = _max_body(raw.get("maxBodyBytes"), problems)
    read_timeout = _read_timeout(raw.get("readTimeout"), problems)
    bearer = parse_secret(raw.get("bearerToken"), "bearerToken", problems)
    signature = _signature(raw.get("signature"), problems)
    rate_limit = _rate_limit(raw.get("rateLimit"), problems)
    max_headers = _max_headers(raw.get("maxHeaderBytes"), problems)
    answer = raw.get("answer", "written")
    if answer not in ANSWERS:
        problems["answer"] = f"must be one of {', '.join(ANSWERS)}, got {answer!r}"
    answer_timeout = _duration(raw.get("answerTimeout"), "answerTimeout", DEFAULT_ANSWER_TIMEOUT, problems)
    if "answerTimeout" in raw and answer != "delivered":
        problems["answerTimeout"] = "applies only with answer: delivered"
    if problems:
        raise ConfigError(problems)
    return WebhookConfig(
        endpoint,
        method,
        port,
        tls,
        max_body,
        read_timeout,
        bearer,
        signature,
        rate_limit,
        answer,
        answer_timeout,
        max_headers,
    )


def _endpoint(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["endpoint"] = "endpoint can't be empty"
        return ""
    if not isinstance(value, str):
        problems["endpoint"] = f"must be a string, got {value!r}"
        return ""
    if _BAD_PATH_CHARS.search(value):
        problems["endpoint"] = f"must be a URL path without spaces, '?' or '#', got {value!r}"
        return ""
    return value if value.startswith("/") else "/" + value


def _method(value: Any, problems: dict[str, str]) -> str:
    if value is None or value == "":
        problems["method"] = f"method can't be empty (use one of {', '.join(METHODS)})"
        return ""
    if value not in METHODS:
        problems["method"] = f"unknown HTTP method {value} (use one of {', '.join(METHODS)}, upper case)"
        return ""
    return str(value)


def _port(value: Any, problems: dict[str, str]) -> int:
    if value is None or value == "":
        problems["port"] = "port can't be empty"
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems["port"] = f"failed to parse server port {value!r}: must be a whole number"
        return 0
    try:
        port = int(value)
    except ValueError:
        problems["port"] = f"failed to parse server port {value!r}: not a whole number"
        return 0
    if not 1 <= port <= 65535:
        problems["port"] = f"must be between 1 and 65535, got {port}"
        return 0
    return port


def _tls(cert: Any, key: Any, problems: dict[str, str]) -> TlsFiles | None:
    paths = {"serverCertPath": cert, "serverKeyPath": key}
    for field, value in paths.items():
        if value is not None and not isinstance(value, str):
            problems[field] = f"must be a file path, got {value!r}"
            return None
    given = {field for field, value in paths.items() if value}
    if len(given) == 1:
        (missing,) = set(paths) - given
        problems[missing] = f"TLS needs both serverCertPath and serverKeyPath; {missing} is missing"
        return None
    return TlsFiles(str(cert), str(key)) if given else None


def _max_body(value: Any, problems: dict[str, str]) -> int:
    if value is None:
        return DEFAULT_MAX_BODY
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BODY:
        problems["maxBodyBytes"] = (
            f"must be a whole number of bytes from 0 to {MAX_BODY} (3 MiB: gRPC carries at most 4 MiB "
            f"per event, headers included), got {value!r}"
        )
        return DEFAULT_MAX_BODY
    return value


def _max_headers(value: Any, problems: dict[str, str]) -> int:
    if value is None:
        return DEFAULT_MAX_HEADERS
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_HEADERS <= value <= MAX_HEADERS:
        problems["maxHeaderBytes"] = (
            f"must be a whole number of bytes from {MIN_HEADERS} to {MAX_HEADERS}, got {value!r}"
        )
        return DEFAULT_MAX_HEADERS
    return value


def _read_timeout(value: Any, problems: dict[str, str]) -> float:
    return _duration(value, "readTimeout", DEFAULT_READ_TIMEOUT, problems)


def _duration(value: Any, name: str, default: float, problems: dict[str, str]) -> float:
    """A Go duration from more than 0 s to ten minutes, or ``default`` with the problem noted."""
    if value is None:
        return default
    if not isinstance(value, str):
        problems[name] = f"must be a duration such as 10s, got {value!r}"
        return default
    try:
        seconds = parse_duration_ns(value) / 1e9
    except DurationError as exc:
        problems[name] = str(exc)
        return default
    if not 0 < seconds <= MAX_READ_TIMEOUT:
        limit = format_duration(MAX_READ_TIMEOUT)
        problems[name] = f"must be more than 0s and at most {limit}, got {value!r}"
        return default
    return seconds


def _signature(value: Any, problems: dict[str, str]) -> Signature | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["signature"] = "must be a mapping with secret (and optionally header)"
        return None
    for key in value:
        if key not in ("secret", "header"):
            problems[f"signature.{key}"] = "unknown field (known fields: secret, header)"
    header = value.get("header", DEFAULT_SIGNATURE_HEADER)
    if not isinstance(header, str) or not _TOKEN.match(header):
        problems["signature.header"] = f"must be an HTTP header name, got {header!r}"
    if value.get("secret") is None:
        problems["signature.secret"] = "is required: {file: /path} or {env: NAME}"
        return None
    secret = parse_secret(value.get("secret"), "signature.secret", problems)
    if secret is None or any(field.startswith("signature") for field in problems):
        return None
    return Signature(secret, header)


def _rate_limit(value: Any, problems: dict[str, str]) -> RateLimit | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems["rateLimit"] = "must be a mapping with requestsPerSecond (and optionally burst)"
        return None
    for key in value:
        if key not in ("requestsPerSecond", "burst"):
            problems[f"rateLimit.{key}"] = "unknown field (known fields: requestsPerSecond, burst)"
    rate = value.get("requestsPerSecond")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE:
        problems["rateLimit.requestsPerSecond"] = f"must be a number above 0, at most 1e6, got {rate!r}"
        rate = 1.0
    burst = value.get("burst", max(1, math.ceil(rate)))
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_RATE:
        problems["rateLimit.burst"] = f"must be a whole number from 1 to 1000000, got {burst!r}"
    if any(field.startswith("rateLimit") for field in problems):
        return None
    return RateLimit(float(rate), int(burst))
