"""Events per second through one StartEventSource stream: the gateway server base vs a bare grpc.aio
server streaming the same messages, each server in its own process, measured alternately in one run."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.procs import free_port, server_process
from bench.stats import median
from common.rpc import eventing_pb2, eventing_stub


async def _drain(port: int, count: int) -> float:
    """Receive one stream of ``count`` events; events per second."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = eventing_stub(channel)
        source = eventing_pb2.EventSource(id="1", name="bench", data="", version="v0.10")
        await stub.ValidateEventSource(source)  # connection warm, before the clock starts
        started = time.perf_counter()
        received = 0
        async for _ in stub.StartEventSource(source):
            received += 1
        elapsed = time.perf_counter() - started
    if received != count:
        raise AssertionError(f"received {received} of {count} events")
    return received / elapsed


def run(smoke: bool) -> dict[str, Any]:
    count = 2_000 if smoke else 100_000
    rounds = 1 if smoke else 5
    rates: dict[str, list[float]] = {"gateway": [], "raw": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for mode in ("raw", "gateway"):
                port = free_port()
                with server_process(
                    [f"stream-{mode}", str(port), str(count)], port, Path(tmp) / f"{mode}.log"
                ):
                    rates[mode].append(asyncio.run(_drain(port, count)))
    gateway, raw = median(rates["gateway"]), median(rates["raw"])
    return {
        "benchmark": "stream throughput (one StartEventSource stream)",
        "events_per_stream": count,
        "rounds": rounds,
        "gateway_events_per_s": round(gateway),
        "raw_grpc_aio_events_per_s": round(raw),
        "ratio": round(gateway / raw, 3),
        "target_ratio": 0.9,
    }
