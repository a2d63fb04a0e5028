"""The server side of each benchmark, run in its own process (``python -m bench.servers MODE ...``).

stream-gateway PORT N           the gateway server base streaming N events of a bench kind per call
stream-raw PORT N               a bare grpc.aio Eventing server streaming the same N messages
stream-paced PORT N RATE        the gateway server base streaming N events per call at RATE events/s, each
                                stamped (``time``) when the source yields it; a source's ``data`` is its
                                phase, a fraction of one interval (so S sources can interleave evenly)
calendar PORT OUT               the calendar gateway, recording each fire's lateness (to OUT on SIGTERM)
http-sink PORT                  an HTTP subscriber (``bench.sinks``): 200 to every POST /, counted per source
nats-sink PORT NATS_URL PREFIX  a NATS subscriber on ``PREFIX.>`` (``bench.sinks``); stats served on PORT
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

import grpc

from common.events import SourceEvent
from common.kinds import GatewayKind, SourceContext
from common.rpc import eventing_pb2, eventing_pb2_grpc
from common.server.app import GatewayServer, install_signal_handlers
from common.settings import ServerSettings

PAYLOAD = b'{"eventTime":"2026-11-21T12:00:00Z","userPayload":{"hello":"world","n":12345}}' * 3


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
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
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
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
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


async def _serve_raw(port: int, count: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    eventing_pb2_grpc.add_EventingServicer_to_server(RawServicer(count), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
    await server.stop(grace=1.0)


async def _serve_calendar(port: int, out: str) -> None:
    from gateways.calendar import KIND

    samples: list[tuple[float, float]] = []

    async def measured(ctx: SourceContext, config: Any) -> AsyncGenerator[SourceEvent, None]:
        async for event in KIND.run(ctx, config):
            assert event.time is not None
            now = datetime.now(UTC)
            samples.append((event.time.timestamp(), (now - event.time).total_seconds()))
            yield event

    kind = GatewayKind(name="calendar", parse=KIND.parse, run=measured)
    server = GatewayServer(kind, ServerSettings(port=port))
    await server.start()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    started = time.perf_counter()
    await stop.wait()
    report = json.dumps({"samples": samples, "seconds": time.perf_counter() - started})
    await asyncio.to_thread(Path(out).write_text, report)
    await server.stop(grace=1.0)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    mode, port = argv[0], int(argv[1])
    if mode == "stream-gateway":
        asyncio.run(_serve_gateway(port, int(argv[2])))
    elif mode == "stream-raw":
        asyncio.run(_serve_raw(port, int(argv[2])))
    elif mode == "stream-paced":
        asyncio.run(_serve_paced(port, int(argv[2]), float(argv[3])))
    elif mode == "calendar":
        asyncio.run(_serve_calendar(port, argv[2]))
    elif mode == "http-sink":
        from bench.sinks import serve_http_sink

        asyncio.run(serve_http_sink(port))
    elif mode == "nats-sink":
        from bench.sinks import serve_nats_sink

        asyncio.run(serve_nats_sink(port, argv[2], argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
