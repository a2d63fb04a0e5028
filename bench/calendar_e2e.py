"""Calendar end to end at scale: from each slot to the HTTP subscriber reading its CloudEvent.

The gateway runs as a pod runs it, ``gateway serve calendar`` and ``gateway client`` in two processes,
with many interval sources (phases spread over the interval) delivering in binary mode to
``bench.servers http-sink`` in a third. Lateness is the sink's arrival time minus ``ce-time`` (the
slot). Only events after every source has delivered once, plus one interval, are counted.

The comparison in the same run is the same load with both processes under CPython's own garbage
collection policy (``--gc python``) instead of the paced one: at thousands of sources the
collector, not the code, sets the tail.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procs import free_port, process, server_process
from bench.stats import percentile


def _config(path: Path, sources: int, interval_ms: int) -> None:
    lines = ["kind: ConfigMap", "apiVersion: v1", "metadata:", "  name: calendar-bench", "data:"]
    for i in range(sources):
        lines += [
            f"  s{i}: |-",
            f"    interval: {interval_ms}ms",
            f"    offset: {i * interval_ms // sources}ms",
        ]
    path.write_text("\n".join(lines) + "\n")


def _stats(control: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{control}/stats", timeout=60) as response:
        stats: dict[str, Any] = json.loads(response.read())
    return stats


def _reset(control: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{control}/reset", method="POST"), timeout=10).close()


@contextlib.contextmanager
def _gateway(tmp: Path, sources: int, interval_ms: int, gc: str) -> Iterator[str]:
    """Sink, server and client running; the sink's control URL."""
    config = tmp / "calendar-bench.yaml"
    _config(config, sources, interval_ms)
    sink, grpc_port, ops = free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    server = [*cli, "serve", "calendar", "--port", str(grpc_port), "--gc", gc]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", f"http://127.0.0.1:{sink}/", "--ops-port", str(ops), "--gc", gc]
    client += ["--name", "calendar-gateway", "--kind", "calendar"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(server_process(["http-sink", str(sink)], sink, tmp / "sink.log"))
        stack.enter_context(process(server, grpc_port, tmp / "server.log"))
        stack.enter_context(process(client, ops, tmp / "client.log"))
        yield f"http://127.0.0.1:{sink}"


def _until_every_source_delivered(control: str, sources: int, timeout: float) -> float:
    started = time.monotonic()
    while len(_stats(control)["per_source"]) < sources:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not every one of {sources} sources delivered within {timeout:g}s")
        time.sleep(0.5)
    return time.monotonic() - started


def run_one(sources: int, interval_ms: int, window: float, gc: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _gateway(Path(tmp), sources, interval_ms, gc) as control:
        up_s = _until_every_source_delivered(control, sources, timeout=300)
        time.sleep(interval_ms / 1000)  # one more interval: the last sources' first slots are behind us
        _reset(control)
        time.sleep(window)
        stats = _stats(control)
    late_ms = [lateness * 1000 for lateness in stats["latencies"]]
    expected = sources * window * 1000 / interval_ms
    if not late_ms or abs(len(late_ms) - expected) > sources:
        raise AssertionError(f"{len(late_ms)} events in the window, expected about {expected:.0f}")
    if stats["unreadable"]:
        raise AssertionError(f"{stats['unreadable']} events without ce-subject/ce-id")
    return {
        "benchmark": f"calendar end to end, {sources} interval sources -> HTTP subscriber, {gc} GC",
        "measured": "sink arrival time - ce-time (the slot); server and client in their own processes",
        "sources": sources,
        "interval_ms": interval_ms,
        "window_s": window,
        "gc_policy": gc,
        "all_sources_delivering_after_s": round(up_s, 1),
        "events": len(late_ms),
        "lateness_p50_ms": round(percentile(late_ms, 50), 3),
        "lateness_p99_ms": round(percentile(late_ms, 99), 3),
        "lateness_max_ms": round(max(late_ms), 3),
    }


def run(smoke: bool) -> list[dict[str, Any]]:
    if smoke:
        return [run_one(sources=20, interval_ms=500, window=1.0, gc="paced")]
    # 70 s: the window always holds one of the paced collector's once-a-minute full passes, as the
    # lateness benchmark's does, so two runs are compared with the same pauses in them.
    return [run_one(10_000, 10_000, 70.0, gc) for gc in ("paced", "python")]
