"""HTTP request <-> event: the body as the payload, the rest as CloudEvent extensions. Pure, no I/O.

========================  ==========================================================================
event field               from the request
========================  ==========================================================================
payload                   the body, byte for byte (what v0.11 sent, so legacy subscribers see no change)
content type              the ``Content-Type`` header as sent when it is a valid media type (RFC 9110
                          8.3.1: ``type/subtype`` and parameters), else ``application/octet-stream``: a
                          body is never claimed to be JSON because the caller said nothing
id                        ``<source>:<value>`` of the first of ``X-Request-Id``, ``X-GitHub-Delivery``,
                          ``X-Gitlab-Event-UUID`` that is present (printable ASCII, at most 200
                          characters), else ``<source>:<fresh uuid4>``
time                      when the request was received
extension ``method``      the method, e.g. ``POST``
extension ``path``        the path (decoded), e.g. ``/github/push``
extension ``query``       JSON object: query parameter name -> list of values, e.g. ``{"ref":["main"]}``
extension ``headers``     JSON object: header name (lower case) -> list of values, in the order received,
                          without credentials: ``Authorization``, ``Proxy-Authorization``, ``Cookie``,
                          ``Set-Cookie``, ``X-Hub-Signature``, ``X-Hub-Signature-256`` and the configured
                          signature header
========================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from common.events import SourceEvent, media_type

ID_HEADERS = ("x-request-id", "x-github-delivery", "x-gitlab-event-uuid")
"""Headers that name a delivery; a sender's retry carries the same value, so the event keeps its id."""
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-hub-signature", "x-hub-signature-256"}
)
"""Credentials never forwarded to subscribers."""
MAX_ID_LENGTH = 200
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as a webhook source sees it."""

    method: str
    """As sent, e.g. ``POST``."""
    path: str
    """The decoded path, e.g. ``/github/push``."""
    query: tuple[tuple[str, str], ...] = ()
    """Query parameters in order, decoded; a name may repeat."""
    headers: tuple[tuple[str, str], ...] = ()
    """Header fields in order as (name, value); a name may repeat."""
    body: bytes = b""
    """The body exactly as received (not decompressed)."""
    received_at: datetime | None = None
    """When the request arrived (aware)."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        return next((value for key, value in self.headers if key.lower() == lower), None)


def event_id(source: str, headers: Iterable[tuple[str, str]], new_id: Callable[[], str]) -> str:
    """``<source>:<delivery id>`` from the first usable id header, else ``<source>:<new_id()>``."""
    found: dict[str, str] = {}
    for name, value in headers:
        found.setdefault(name.lower(), value.strip())
    for name in ID_HEADERS:
        value = found.get(name, "")
        if value and len(value) <= MAX_ID_LENGTH and _PRINTABLE.match(value):
            return f"{source}:{value}"
    return f"{source}:{new_id()}"


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _json(value: dict[str, list[str]]) -> str:
    """Compact, ASCII-only JSON: it travels in HTTP and NATS headers in binary mode."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def forwarded_headers(
    headers: Iterable[tuple[str, str]], strip: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """Header name (lower case) -> values, without credentials (``SECRET_HEADERS`` and ``strip``)."""
    hidden = SECRET_HEADERS | {name.lower() for name in strip}
    return _grouped((name.lower(), value) for name, value in headers if name.lower() not in hidden)


def content_type(request: HttpRequest) -> str:
    """The request's ``Content-Type`` when it is a valid media type, else ``application/octet-stream``."""
    return media_type(request.header("content-type") or "")


def extensions(request: HttpRequest, strip: frozenset[str] = frozenset()) -> dict[str, str]:
    """The CloudEvent extensions of ``request``: method, path, query and forwarded headers."""
    return {
        "method": request.method,
        "path": request.path,
        "query": _json(_grouped(request.query)),
        "headers": _json(forwarded_headers(request.headers, strip)),
    }


def to_event(
    source: str,
    request: HttpRequest,
    *,
    strip: frozenset[str] = frozenset(),
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    written: asyncio.Future[None] | None = None,
    delivered: asyncio.Future[None] | None = None,
    known: dict[str, str] | None = None,
) -> SourceEvent:
    """The event for ``request`` to source ``source``; ``strip`` names more headers to keep back;
    ``known`` is ``extensions(request, strip)`` when the caller has it already."""
    return SourceEvent(
        payload=request.body,
        id=event_id(source, request.headers, new_id),
        time=request.received_at,
        content_type=content_type(request),
        extensions=known if known is not None else extensions(request, strip),
        written=written,
        delivered=delivered,
    )


def from_event(event: SourceEvent) -> HttpRequest:
    """The request an event was made from, as far as the event carries it (no credentials)."""
    ext = event.extensions
    query: dict[str, list[str]] = json.loads(ext.get("query", "{}"))
    headers: dict[str, list[str]] = json.loads(ext.get("headers", "{}"))
    return HttpRequest(
        method=ext.get("method", ""),
        path=ext.get("path", ""),
        query=tuple((name, value) for name, values in query.items() for value in values),
        headers=tuple((name, value) for name, values in headers.items() for value in values),
        body=event.payload,
        received_at=event.time,
    )
