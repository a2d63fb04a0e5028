"""Calendar fire lateness at the server for many interval sources with spread phases.

The calendar gateway runs in its own process and records, for each fire, how late it left the
source after its slot. This process is the client: it starts every source over one gRPC channel and
drains the streams. Only slots after every stream is up are counted. The baseline is an idle
asyncio timer in this run: ``asyncio.sleep`` overshoot on the same machine, right before.

The server paces garbage collection (``common.collector``); the 10,000-source window is long
enough to hold one of its full passes. The same load under CPython's own collection policy is run
too, for comparison.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.procs import free_port, server_process
from bench.stats import percentile
from common.rpc import eventing_pb2, eventing_stub


async def _timer_baseline(samples: int = 200) -> list[float]:
    lateness = []
    loop = asyncio.get_running_loop()
    for _ in range(samples):
        target = loop.time() + 0.005
        await asyncio.sleep(0.005)
        lateness.append(loop.time() - target)
    return lateness


async def _client(port: int, sources: int, interval_s: float, duration: float) -> tuple[float, int]:
    received = 0

    async def drain(call: Any) -> None:
        nonlocal received
        async for _ in call:
            received += 1

    options = [("grpc.max_concurrent_streams", 100_000)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = eventing_stub(channel)
        calls = []
        for i in range(sources):
            offset_ms = int(i * interval_s * 1000 / sources)
            data = f"interval: {interval_s:g}s\noffset: {offset_ms}ms\n"
            calls.append(
                stub.StartEventSource(
                    eventing_pb2.EventSource(id=str(i), name=f"s{i}", data=data, version="v0.10")
                )
            )
        drains = [asyncio.ensure_future(drain(c)) for c in calls]
        await asyncio.gather(*(c.wait_for_connection() for c in calls))
        measured_from = time.time() + interval_s  # every source has been started by now
        await asyncio.sleep(duration + interval_s)  # the measurement window itself
        for c in calls:
            c.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
    return measured_from, received


def run_one(sources: int, interval_s: float, duration: float, gc: str = "paced") -> dict[str, Any]:
    baseline = asyncio.run(_timer_baseline())
    with tempfile.TemporaryDirectory() as tmp:
        out, port = Path(tmp) / "lateness.json", free_port()
        with server_process(["calendar", str(port), str(out), gc], port, Path(tmp) / "server.log"):
            measured_from, received = asyncio.run(_client(port, sources, interval_s, duration))
        samples = json.loads(out.read_text())["samples"]
    late_ms = [lat * 1000 for slot, lat in samples if slot >= measured_from]
    if not late_ms:
        raise AssertionError("no fires inside the measurement window")
    return {
        "benchmark": f"calendar fire lateness, {sources} interval sources, {gc} garbage collection",
        "sources": sources,
        "gc_policy": gc,
        "window_s": duration,
        "interval_s": interval_s,
        "fires_measured": len(late_ms),
        "events_received_by_client": received,
        "lateness_p50_ms": round(percentile(late_ms, 50), 3),
        "lateness_p99_ms": round(percentile(late_ms, 99), 3),
        "lateness_max_ms": round(max(late_ms), 3),
        "baseline_idle_timer_p50_ms": round(percentile([b * 1000 for b in baseline], 50), 3),
        "baseline_idle_timer_p99_ms": round(percentile([b * 1000 for b in baseline], 99), 3),
        "target_p99_ms_at_10000": 10,
    }


def run(smoke: bool) -> list[dict[str, Any]]:
    if smoke:
        return [run_one(sources=50, interval_s=0.5, duration=1.0)]
    return [
        run_one(sources=1_000, interval_s=10, duration=20),
        run_one(sources=10_000, interval_s=10, duration=70),
        run_one(sources=10_000, interval_s=10, duration=20, gc="python"),
    ]
