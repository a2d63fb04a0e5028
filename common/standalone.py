"""Standalone mode: the server and a client in one process, talking gRPC over a loopback port.

The client here validates and starts every source and prints each event as one JSON line. It talks
to the server exactly as the client container of a pod does, so what works here works in a pod.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

import grpc

from common import tasks
from common.configmap import EventSourceSpec
from common.kinds import GatewayKind
from common.logs import SourceLogger
from common.rpc import eventing_pb2, eventing_stub
from common.server.app import GatewayServer
from common.settings import ServerSettings

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

_log = logging.getLogger(__name__)


def event_line(event: eventing_pb2.Event) -> str:
    """One event as a JSON line: source, id, time, content type, and the payload (JSON if it is)."""
    try:
        data: Any = json.loads(event.payload)
    except ValueError:
        data = {"base64": base64.b64encode(event.payload).decode()}
    line = {
        "source": event.name,
        "id": event.id,
        "time": event.time,
        "subject": event.subject,
        "datacontenttype": event.content_type,
        "extensions": dict(event.extensions),
        "data": data,
    }
    return json.dumps({k: v for k, v in line.items() if v not in ("", {})}, ensure_ascii=False)


async def _follow(stub: EventingAsyncStub, spec: EventSourceSpec, out: TextIO) -> None:
    log = SourceLogger(_log, spec.name)
    verdict = await stub.ValidateEventSource(spec.to_proto())
    if not verdict.isValid:
        log.error("Not starting an invalid event source: %s", verdict.reason)
        return
    try:
        async for event in stub.StartEventSource(spec.to_proto()):
            out.write(event_line(event) + "\n")
            out.flush()
    except grpc.aio.AioRpcError as exc:
        log.error("Event source stream ended: %s: %s", exc.code().name, exc.details())


async def follow_all(target: str, specs: Sequence[EventSourceSpec], stop: asyncio.Event, out: TextIO) -> None:
    """Validate and stream every source of ``specs`` from the server at ``target`` until ``stop`` is set."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = eventing_stub(channel)
        followers = [tasks.start(_follow(stub, s, out), name=f"follow {s.name!r}") for s in specs]
        await stop.wait()
        for follower in followers:
            await tasks.stop(follower, timeout=5.0)


async def run_standalone(
    kind: GatewayKind[Any], specs: Sequence[EventSourceSpec], stop: asyncio.Event, out: TextIO
) -> None:
    """Serve ``kind`` on a free loopback port and print every event of ``specs`` until ``stop`` is set."""
    server = GatewayServer(kind, ServerSettings(port=0))
    port = await server.start()
    try:
        await follow_all(f"127.0.0.1:{port}", specs, stop, out)
    finally:
        await server.stop(grace=2.0)
