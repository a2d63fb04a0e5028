"""The one request handler of a port: the checks, in order, then the hand-off to the source's stream.

    1. path          404  no source serves this path on this port
    2. method        405  with ``Allow``: the path is served, not with this method
       (route)       503  with ``Retry-After``: the source is stopping, restarting, or its stream broke
    3. rate limit    429  with ``Retry-After``
    4. declared size 413  ``Content-Length`` over ``maxBodyBytes``; 431 for over 256 KiB of headers,
                     or forwarded headers, path and query over ``maxHeaderBytes`` as a subscriber
                     would receive them (``ce-*`` headers, percent-encoded)
    5. auth          401  with ``WWW-Authenticate`` (no bearer token); 403 (a wrong one)
    6. body          413  over ``maxBodyBytes`` as it streams in; 408 slower than ``readTimeout``;
                     400  a malformed body (bad chunked encoding, a truncated body)
    7. signature     401  with ``WWW-Authenticate`` (none); 403 (malformed or wrong)
    8. hand-off      200  once the event has been written to the source's gRPC stream (with
                          ``answer: delivered``, once every subscriber accepted it);
                     503  with ``Retry-After`` when the stream ended first (never a 200 for an event
                          that went nowhere, argo-events#3448), or when ``answer: delivered`` waited
                          ``answerTimeout`` in vain

Cheap checks come first, so a flood of bad requests costs no body reads and no hashing. ``Expect:
100-continue`` is answered after step 5, so a refused caller need not send its body at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from common.events import NotDelivered, NotWritten, SourceEvent, header_bytes
from common.server.channel import ChannelClosed
from gateways.webhook import binding, metrics
from gateways.webhook.auth import BEARER_CHALLENGE, Verdict
from gateways.webhook.route import Route

MAX_HEADER_BYTES = 256 * 1024
"""Header names and values an event may carry: with a 3 MiB body it stays under gRPC's 4 MiB."""
RETRY_UNAVAILABLE = 5
"""``Retry-After`` seconds of a 503: about the client's first restart delays (0.5 s doubling)."""
READ_CHUNK = 64 * 1024
OK_TEXT = "request successfully processed"
"""What v0.11 answered with its 200."""

Lookup = Callable[[str], Mapping[str, Route] | None]


def reply(
    status: int, text: str, *, headers: Mapping[str, str] | None = None, close: bool = False
) -> web.Response:
    """A plain-text response; ``close`` ends the connection after it (an unread or broken body)."""
    response = web.Response(status=status, text=text + "\n", headers=headers)
    if close:
        response.force_close()
    return response


def unavailable(why: str) -> web.Response:
    return reply(503, why, headers={"Retry-After": str(RETRY_UNAVAILABLE)})


class PortHandler:
    """Routes a port's requests by path (``lookup``), then by method, and runs the checks."""

    def __init__(self, port: int, lookup: Lookup) -> None:
        self.port = port
        self._lookup = lookup
        self._responses: dict[int, Counter] = {}
        """The response counter's child per status code, looked up once (labels() costs per request)."""

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._handle(request)
        counter = self._responses.get(response.status)
        if counter is None:
            counter = metrics.RESPONSES.labels(port=str(self.port), code=str(response.status))
            self._responses[response.status] = counter
        counter.inc()
        return response

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        methods = self._lookup(request.path)
        if not methods:
            return reply(404, f"no webhook endpoint {request.path} on this port")
        route = methods.get(request.method)
        if route is None:
            allow = ", ".join(sorted(methods))
            return reply(405, f"{request.path} takes {allow}", headers={"Allow": allow})
        if not route.available:
            return unavailable("the event source is not taking events now; retry shortly")
        refused = self._before_body(request, route)
        if refused is not None:
            return refused
        message = binding.HttpRequest(
            method=request.method,
            path=request.path,
            query=tuple(request.rel_url.query.items()),
            headers=tuple((_decode(name), _decode(value)) for name, value in request.raw_headers),
            received_at=datetime.now(UTC),
        )
        strip = (
            frozenset({route.credentials.signature_header}) if route.credentials.signature else frozenset()
        )
        forwarded = binding.extensions(message, strip)
        size, limit = header_bytes(forwarded), route.config.max_header_bytes
        if size > limit:
            return reply(
                431,
                f"the request's headers, path and query come to {size} bytes; at most {limit}",
                close=True,
            )
        await _continue(request)
        body = await _read_body(request, route)
        if isinstance(body, web.Response):
            return body
        signature = self._signature(request, route, body)
        if signature is not None:
            return signature
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        written.add_done_callback(_retrieve)
        delivered: asyncio.Future[None] | None = None
        if route.config.answer == "delivered":
            delivered = loop.create_future()
            delivered.add_done_callback(_retrieve)
        complete = dataclasses.replace(message, body=body)
        event = binding.to_event(
            route.source, complete, known=forwarded, written=written, delivered=delivered
        )
        return await _hand_off(route, event, written)

    def _before_body(self, request: web.BaseRequest, route: Route) -> web.Response | None:
        """Rate limit, declared size, bearer token: everything that needs no body."""
        if route.limiter is not None and not route.limiter.take():
            metrics.RATE_LIMITED.labels(source=route.source).inc()
            wait = route.limiter.retry_after()
            return reply(429, "too many requests", headers={"Retry-After": str(wait)})
        if sum(len(name) + len(value) for name, value in request.raw_headers) > MAX_HEADER_BYTES:
            return reply(431, "request headers too large", close=True)
        limit = route.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return reply(413, f"the body is over {limit} bytes", close=True)
        verdict = route.credentials.check_bearer(request.headers.get("Authorization"), route.logger)
        if verdict is Verdict.OK:
            return None
        metrics.AUTH_FAILURES.labels(source=route.source, credential="bearer", reason=verdict.value).inc()
        if verdict is Verdict.MISSING:
            return reply(401, "a bearer token is required", headers={"WWW-Authenticate": BEARER_CHALLENGE})
        return reply(403, "the bearer token is not valid")

    def _signature(self, request: web.BaseRequest, route: Route, body: bytes) -> web.Response | None:
        credentials = route.credentials
        given = request.headers.get(credentials.signature_header) if credentials.signature else None
        verdict = credentials.check_signature(given, body, route.logger)
        if verdict is Verdict.OK:
            return None
        metrics.AUTH_FAILURES.labels(source=route.source, credential="signature", reason=verdict.value).inc()
        if verdict is Verdict.MISSING:
            return reply(
                401,
                f"a {credentials.signature_header} signature is required",
                headers={"WWW-Authenticate": credentials.signature_challenge},
            )
        return reply(403, f"the {credentials.signature_header} signature does not match the body")


async def _continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` (curl sends it for bodies over 1 KiB and waits a second for it)."""
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def _read_body(request: web.BaseRequest, route: Route) -> bytes | web.Response:
    """The whole body within ``readTimeout`` and ``maxBodyBytes``, or the response that refuses it."""
    limit = route.config.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(route.config.read_timeout):
            while chunk := await request.content.read(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    return reply(413, f"the body is over {limit} bytes", close=True)
                chunks.append(chunk)
    except TimeoutError:
        route.logger.info(
            "A client sent its body too slowly (%d bytes in %.1fs).", size, route.config.read_timeout
        )
        return reply(408, "the body did not arrive in time", close=True)
    except (web.RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        route.logger.debug("Reading a request body failed: %r", exc)
        return reply(400, "the body could not be read", close=True)
    return b"".join(chunks)


def _decode(raw: bytes) -> str:
    """Header bytes as text: UTF-8 when they are, else Latin-1 (what HTTP/1.1 historically meant)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


async def _hand_off(route: Route, event: SourceEvent, written: asyncio.Future[None]) -> web.Response:
    """Put the event on the source's channel; answer once the stream has written it, or failed to."""
    try:
        await route.channel.send(event)
        await written  # cancelled only as the port shuts down: the event may still be sent, unanswered
    except (ChannelClosed, NotWritten):
        return unavailable("the event source's stream ended before the event was sent; retry shortly")
    if event.delivered is not None:
        try:
            async with asyncio.timeout(route.config.answer_timeout):
                await event.delivered
        except TimeoutError:
            metrics.UNDELIVERED.labels(source=route.source, why="timeout").inc()
            return unavailable(
                f"not every subscriber accepted the event within {route.config.answer_timeout:g}s; "
                "retry (the event may still arrive: subscribers see the same id again)"
            )
        except NotDelivered:
            metrics.UNDELIVERED.labels(source=route.source, why="stream_ended").inc()
            return unavailable("the event source's stream ended before every subscriber accepted the event")
    metrics.BODY_BYTES.labels(source=route.source).inc(len(event.payload))
    return reply(200, OK_TEXT)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed hand-off as seen, also when its request handler is gone (no "never retrieved" log)."""
    if not future.cancelled():
        future.exception()
