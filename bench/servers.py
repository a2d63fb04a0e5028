"""The server side of each benchmark, run in its own process (``python -m bench.servers MODE ...``).

stream-gateway PORT N           the gateway server base streaming N events of a bench kind per call
stream-raw PORT N               a bare grpc.aio Eventing server streaming the same N messages
stream-paced PORT N RATE        the gateway server base streaming N events per call at RATE events/s, each
                                stamped (``time``) when the source yields it; a source's ``data`` is its
                                phase, a fraction of one interval (so S sources can interleave evenly)
calendar PORT OUT GC            the calendar gateway under garbage-collection policy GC (paced, python),
                                recording each fire's lateness (to OUT on SIGTERM)
http-sink PORT                  an HTTP subscriber (``bench.sinks``): 200 to every POST /, counted per source
nats-sink PORT NATS_URL PREFIX  a NATS subscriber on ``PREFIX.>`` (``bench.sinks``); stats served on PORT
relay PORT SINK_URL             a bare aiohttp webhook relay: each POST becomes one CloudEvent POSTed to
                                SINK_URL (one shared keep-alive session), answered once that POST returns
load URL N CONCURRENCY [RATE]   an HTTP load generator (no port): N POSTs to URL from CONCURRENCY workers,
                                unpaced or at RATE requests/s; prints its outcome as one JSON line
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from common.client.cloudevent import encode
from common.client.delivery.settings import DeliverySettings
from common.client.model import Format, GatewayIdentity, ReceivedEvent
from common.events import SourceEvent, rfc3339
from common.kinds import GatewayKind, SourceContext
from common.rpc import eventing_pb2, eventing_pb2_grpc
from common.server.app import GatewayServer
from common.settings import CollectorSettings, ServerSettings
from common.signals import install_signal_handlers

PAYLOAD = b'{"eventTime":"2026-11-21T12:00:00Z","userPayload":{"hello":"world","n":12345}}' * 3


async def _until_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()


def bench_events(count: int) -> list[SourceEvent]:
    return [
        SourceEvent(payload=PAYLOAD, id=f"bench:{i}", content_type="application/json") for i in range(count)
    ]


async def _serve_gateway(port: int, count: int) -> None:
    events = bench_events(count)

    async def run(ctx: SourceContext, config: None) -> AsyncGenerator[SourceEvent, None]:
        for event in events:
            yield event

    kind: GatewayKind[None] = GatewayKind(name="bench", parse=lambda data: None, run=run)
    server = GatewayServer(kind, ServerSettings(port=port))
    await server.start()
    await _until_signal()
    await server.stop(grace=1.0)


async def _serve_paced(port: int, count: int, rate: float) -> None:
    async def run(ctx: SourceContext, phase: float) -> AsyncGenerator[SourceEvent, None]:
        loop = asyncio.get_running_loop()
        start = loop.time() + phase / rate
        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield SourceEvent(
                payload=PAYLOAD, id=f"bench:{i}", time=datetime.now(UTC), content_type="application/json"
            )

    kind: GatewayKind[float] = GatewayKind(name="bench", parse=lambda data: float(data or 0), run=run)
    server = GatewayServer(kind, ServerSettings(port=port))
    await server.start()
    await _until_signal()
    await server.stop(grace=1.0)


class RawServicer(eventing_pb2_grpc.EventingServicer):
    """What a hand-written server does: yield one message per event, nothing else."""

    def __init__(self, count: int) -> None:
        self.events = bench_events(count)

    async def ValidateEventSource(
        self, request: eventing_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]
    ) -> eventing_pb2.ValidEventSource:
        return eventing_pb2.ValidEventSource(isValid=True)

    async def StartEventSource(
        self, request: eventing_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[eventing_pb2.Event]:
        for event in self.events:
            yield eventing_pb2.Event(
                name=request.name, payload=event.payload, id=event.id, content_type=event.content_type
            )

    async def StreamEventSource(
        self,
        requests: AsyncIterator[eventing_pb2.StreamControl],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[eventing_pb2.StreamMessage]:
        """Not offered, as by a v0.11 server."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "StreamEventSource is not offered")
        yield eventing_pb2.StreamMessage()  # unreachable: makes this an async generator


async def _serve_raw(port: int, count: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    eventing_pb2_grpc.add_EventingServicer_to_server(RawServicer(count), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _until_signal()
    await server.stop(grace=1.0)


async def _serve_calendar(port: int, out: str, gc_policy: str) -> None:
    from gateways.calendar import KIND

    samples: list[tuple[float, float]] = []

    async def measured(ctx: SourceContext, config: Any) -> AsyncGenerator[SourceEvent, None]:
        async for event in KIND.run(ctx, config):
            assert event.time is not None
            now = datetime.now(UTC)
            samples.append((event.time.timestamp(), (now - event.time).total_seconds()))
            yield event

    kind = GatewayKind(name="calendar", parse=KIND.parse, run=measured)
    server = GatewayServer(kind, ServerSettings(port=port, gc=CollectorSettings(policy=gc_policy)))
    await server.start()
    started = time.perf_counter()
    await _until_signal()
    report = json.dumps({"samples": samples, "seconds": time.perf_counter() - started})
    await asyncio.to_thread(Path(out).write_text, report)
    await server.stop(grace=1.0)


RELAY_SOURCE = "bench"
RELAY_GATEWAY = GatewayIdentity(name="webhook-gateway", kind="webhook")
"""What ``gateway run webhook`` calls itself, so the relay's CloudEvents are the gateway's, byte for byte."""


def _compact_json(value: dict[str, list[str]]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _relay_event(request: web.Request, body: bytes, now: datetime) -> eventing_pb2.Event:
    """The event a webhook gateway makes of ``request``: the body, the delivery id, the request's
    method, path, query and headers (lower case, grouped) as compact JSON extensions."""
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    query: dict[str, list[str]] = {}
    for name, value in request.query.items():
        query.setdefault(name, []).append(value)
    return eventing_pb2.Event(
        name=RELAY_SOURCE,
        payload=body,
        id=f"{RELAY_SOURCE}:{request.headers.get('X-Request-Id', '')}",
        time=rfc3339(now),
        content_type=request.headers.get("Content-Type", ""),
        extensions={
            "method": request.method,
            "path": request.path,
            "query": _compact_json(query),
            "headers": _compact_json(headers),
        },
    )


async def _serve_relay(port: int, sink_url: str) -> None:
    """What a hand-written webhook relay does: read the body, POST it on, answer when that returns."""
    timeout = aiohttp.ClientTimeout(total=DeliverySettings().request_timeout)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        now = datetime.now(UTC)
        received = ReceivedEvent(RELAY_SOURCE, _relay_event(request, body, now), now)
        message = encode(received, RELAY_GATEWAY, Format.BINARY)
        async with session.post(sink_url, data=message.body, headers=message.headers) as response:
            await response.read()
            status = response.status
        return web.Response(status=200 if status == 200 else 502, text="relayed\n")

    app = web.Application()
    app.router.add_post("/{path:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await _until_signal()
    finally:
        await runner.cleanup()
        await session.close()


LOAD_BODY = b'{"eventTime":"2026-11-21T12:00:00Z","userPayload":{"hello":"world","n":12345}}'


async def _load(url: str, count: int, concurrency: int, rate: float) -> dict[str, Any]:
    """POST ``count`` small JSON bodies to ``url`` from ``concurrency`` workers over keep-alive
    connections, each request's ``X-Request-Id`` ``w<worker>:<its number in that worker>`` and its
    ``X-Sent-At`` the send time; unpaced, or request ``i`` not before ``start + i / rate``."""
    statuses: dict[str, int] = {}
    sends: list[float] = []
    replies: list[float] = []
    errors: list[str] = []
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def worker(w: int) -> None:
            nonlocal issued
            seq = 0
            while issued < count:
                i, issued = issued, issued + 1
                if rate > 0 and (delay := start + i / rate - loop.time()) > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                headers = {
                    "Content-Type": "application/json",
                    "X-Request-Id": f"w{w}:{seq}",
                    "X-Sent-At": repr(sent),
                }
                try:
                    async with session.post(url, data=LOAD_BODY, headers=headers) as response:
                        await response.read()
                        status = str(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(repr(exc))
                    status = "error"
                replies.append(time.time())
                sends.append(sent)
                statuses[status] = statuses.get(status, 0) + 1
                if status.startswith("2"):
                    seq += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return {
        "sent": len(sends),
        "statuses": statuses,
        "ok": sum(n for status, n in statuses.items() if status.startswith("2")),
        "first_send": min(sends, default=0.0),
        "last_reply": max(replies, default=0.0),
        "errors": errors[:5],
    }


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    if argv[0] == "load":
        rate = float(argv[4]) if len(argv) > 4 else 0.0
        outcome = asyncio.run(_load(argv[1], int(argv[2]), int(argv[3]), rate))
        print(json.dumps(outcome), flush=True)
        return
    mode, port = argv[0], int(argv[1])
    if mode == "stream-gateway":
        asyncio.run(_serve_gateway(port, int(argv[2])))
    elif mode == "stream-raw":
        asyncio.run(_serve_raw(port, int(argv[2])))
    elif mode == "stream-paced":
        asyncio.run(_serve_paced(port, int(argv[2]), float(argv[3])))
    elif mode == "calendar":
        asyncio.run(_serve_calendar(port, argv[2], argv[3]))
    elif mode == "http-sink":
        from bench.sinks import serve_http_sink

        asyncio.run(serve_http_sink(port))
    elif mode == "nats-sink":
        from bench.sinks import serve_nats_sink

        asyncio.run(serve_nats_sink(port, argv[2], argv[3]))
    elif mode == "relay":
        asyncio.run(_serve_relay(port, argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
