"""The gateway client hop: events per second from the gRPC streams to a subscriber, and the latency it
adds, against a baseline that forwards the same messages with bare aiohttp / nats-py.

Processes: the load generator is the gateway server base (``bench.servers stream-gateway`` for
throughput, ``stream-paced`` for latency) serving S sources ``s0..s{S-1}``; the subscriber is a sink
process (``http-sink``, or ``nats-sink`` behind a ``nats-server``) that counts events per source,
checks their order, and stamps each arrival. This process runs, alternately, the client under test
(``GatewayClient`` with ``build_delivery``) and the baseline:

* HTTP baseline: one shared ``aiohttp.ClientSession`` (keep-alive); per source, read its stream and
  POST each event in order, one request in flight per source, the body and headers written by
  ``common.client.cloudevent.encode`` in binary mode (the same bytes the client sends).
* NATS baseline: one nats-py connection; per source, a reader queues the encoded events and a
  publisher takes what is queued (at most ``nats_batch``), publishes each, and flushes once per
  batch, as the client's NATS transport does.

Throughput is measured at the sink: events over the time from the first to the last event it
accepted. Latency is measured at the sink too: its receive time minus the time the load generator's
source yielded the event (stamped into the event's ``time``; both processes share the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nats

from bench.procs import free_port, nats_server_binary, process, server_process
from bench.stats import median, percentile
from common.client.app import ClientSettings, GatewayClient
from common.client.cloudevent import encode
from common.client.config_source import StaticConfigSource
from common.client.delivery.settings import DeliverySettings
from common.client.model import Format, GatewayIdentity, Message, ReceivedEvent
from common.client.runner import DeliveryOptions, build_delivery
from common.configmap import EventSourceSpec, parse_event_sources
from common.rpc import eventing_stub

SOURCES = 4
GATEWAY = GatewayIdentity(name="bench-gateway", kind="bench")
SUBJECT_PREFIX = "bench"
TARGET_RATIO = 0.8
MEASURED_AT = (
    "the sink process: HTTP, when the sink has read the POST (before its 200); NATS, when the sink's "
    "subscription callback gets the message (core NATS via a nats-server process)"
)


@dataclass(frozen=True)
class Target:
    """One transport's subscriber: the URL the client is given, and the sink's control port."""

    transport: str
    url: str
    control_port: int
    nats_url: str = ""


def config_text(sources: int) -> str:
    """The event sources ``s0..``; each one's data is its phase (used by the paced generator)."""
    return "".join(f's{i}: "{i / sources:g}"\n' for i in range(sources))


def _specs(sources: int) -> list[EventSourceSpec]:
    return parse_event_sources(config_text(sources), origin="bench")


# --- the client under test and the baselines ------------------------------------------------------


async def _run_client(target: Target, grpc_port: int, sources: int, stop: asyncio.Event) -> None:
    delivery = build_delivery(DeliveryOptions((target.url,), Format.BINARY), GATEWAY, sys.stdout)
    settings = ClientSettings(server=f"127.0.0.1:{grpc_port}", ops_port=-1, grace_period=5.0)
    client = GatewayClient(settings, StaticConfigSource(config_text(sources), "bench"), delivery)
    await client.run(stop)


def _encode(source: str, event: Any) -> Message:
    return encode(ReceivedEvent(source, event, datetime.now(UTC)), GATEWAY, Format.BINARY)


async def _baseline_http(target: Target, grpc_port: int, sources: int, stop: asyncio.Event) -> None:
    timeout = aiohttp.ClientTimeout(total=DeliverySettings().request_timeout)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session,
    ):
        stub = eventing_stub(channel)

        async def forward(spec: EventSourceSpec) -> None:
            async for event in stub.StartEventSource(spec.to_proto()):
                message = _encode(spec.name, event)
                async with session.post(target.url, data=message.body, headers=message.headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise AssertionError(f"the sink answered {response.status}")

        await asyncio.gather(*(forward(spec) for spec in _specs(sources)))


async def _baseline_nats(target: Target, grpc_port: int, sources: int, stop: asyncio.Event) -> None:
    settings = DeliverySettings()
    nc = await nats.connect(target.nats_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = eventing_stub(channel)

            async def forward(spec: EventSourceSpec) -> None:
                queue: asyncio.Queue[Message | None] = asyncio.Queue(settings.queue_size)

                async def read() -> None:
                    async for event in stub.StartEventSource(spec.to_proto()):
                        await queue.put(_encode(spec.name, event))
                    await queue.put(None)

                reader = asyncio.ensure_future(read())
                subject = f"{SUBJECT_PREFIX}.{spec.name}"
                ended = False
                while not ended:
                    batch = [await queue.get()]
                    while len(batch) < settings.nats_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                    for message in batch:
                        if message is None:
                            ended = True
                            break
                        await nc.publish(subject, message.body, headers=dict(message.headers))
                    await nc.flush(timeout=int(settings.request_timeout))
                await reader

            await asyncio.gather(*(forward(spec) for spec in _specs(sources)))
    finally:
        await nc.close()


Runner = Callable[[Target, int, int, asyncio.Event], Awaitable[None]]
BASELINES: dict[str, Runner] = {"http": _baseline_http, "nats": _baseline_nats}


# --- one measured run ---------------------------------------------------------------------------


async def _measure(
    who: str, target: Target, grpc_port: int, sources: int, total: int, timeout: float
) -> dict[str, Any]:
    """Run the client or the baseline until the sink has ``total`` events; the sink's stats."""
    runner = _run_client if who == "client" else BASELINES[target.transport]
    control = f"http://127.0.0.1:{target.control_port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{control}/reset") as response:
            response.raise_for_status()
        stop = asyncio.Event()
        cpu = time.process_time()
        running = asyncio.ensure_future(runner(target, grpc_port, sources, stop))

        async def stats() -> dict[str, Any]:
            url = f"{control}/stats?count={total}&timeout={timeout}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout + 30)) as response:
                response.raise_for_status()
                result: dict[str, Any] = await response.json()
                return result

        waiting = asyncio.ensure_future(stats())
        try:
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if running.done() and running.exception() is not None:
                waiting.cancel()
                await running  # raises
            result = await waiting
            cpu = time.process_time() - cpu
        finally:
            stop.set()
            if not running.done():
                try:
                    await asyncio.wait_for(running, 30)
                except TimeoutError:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
    _check(who, target, result, sources, total)
    result["bench_cpu_s"] = cpu
    return result


def _check(who: str, target: Target, stats: dict[str, Any], sources: int, total: int) -> None:
    where = f"{who} over {target.transport}"
    if stats["order_violations"]:
        raise AssertionError(f"{where}: {stats['order_violations']} order violations at the sink")
    if stats["unreadable"]:
        raise AssertionError(f"{where}: {stats['unreadable']} events without ce-subject/ce-id")
    expected = {f"s{i}": total // sources for i in range(sources)}
    if stats["events"] != total or stats["per_source"] != expected:
        raise AssertionError(f"{where}: the sink got {stats['per_source']}, expected {expected}")


def _rate(stats: dict[str, Any]) -> float:
    window = stats["last"] - stats["first"]
    return (stats["events"] - 1) / window if window > 0 else float("inf")


# --- the benchmarks -----------------------------------------------------------------------------


def throughput(target: Target, grpc_port: int, per_source: int, rounds: int) -> dict[str, Any]:
    total = per_source * SOURCES
    timeout = 30 + total / 200
    rates: dict[str, list[float]] = {"client": [], "baseline": []}
    cpu: dict[str, list[float]] = {"client": [], "baseline": []}
    sink_cpu: dict[str, list[float]] = {"client": [], "baseline": []}
    for i in range(rounds):
        for who in ("client", "baseline") if i % 2 == 0 else ("baseline", "client"):
            stats = asyncio.run(_measure(who, target, grpc_port, SOURCES, total, timeout))
            rates[who].append(_rate(stats))
            cpu[who].append(stats["bench_cpu_s"] / total * 1e6)
            sink_cpu[who].append(stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9))
    client, baseline = median(rates["client"]), median(rates["baseline"])
    return {
        "benchmark": f"client hop throughput (gRPC streams -> {target.transport} subscriber)",
        "transport": target.transport,
        "measured_at": MEASURED_AT,
        "events": total,
        "sources": SOURCES,
        "rounds": rounds,
        "client_events_per_s": round(client),
        "baseline_events_per_s": round(baseline),
        "ratio": round(client / baseline, 3),
        "target_ratio": TARGET_RATIO,
        "order_violations": 0,
        "client_rounds_events_per_s": [round(r) for r in rates["client"]],
        "baseline_rounds_events_per_s": [round(r) for r in rates["baseline"]],
        "client_cpu_us_per_event": round(median(cpu["client"]), 1),
        "baseline_cpu_us_per_event": round(median(cpu["baseline"]), 1),
        "sink_cpu_share_client": round(median(sink_cpu["client"]), 2),
        "sink_cpu_share_baseline": round(median(sink_cpu["baseline"]), 2),
    }


def latency(target: Target, grpc_port: int, rate: float, duration: float, rounds: int) -> dict[str, Any]:
    per_source = round(rate / SOURCES * duration)
    total = per_source * SOURCES
    timeout = duration + 30
    ms: dict[str, list[float]] = {"client": [], "baseline": []}
    round_p99: dict[str, list[float]] = {"client": [], "baseline": []}
    for i in range(rounds):
        for who in ("client", "baseline") if i % 2 == 0 else ("baseline", "client"):
            stats = asyncio.run(_measure(who, target, grpc_port, SOURCES, total, timeout))
            if len(stats["latencies"]) != total:
                raise AssertionError(f"{who}: {len(stats['latencies'])} of {total} events carried a time")
            samples = [lat * 1000 for lat in stats["latencies"]]
            ms[who] += samples
            round_p99[who].append(round(percentile(samples, 99), 3))
    p = {who: (percentile(v, 50), percentile(v, 99), max(v)) for who, v in ms.items()}
    return {
        "benchmark": f"client hop latency at {rate:g} events/s ({target.transport} subscriber)",
        "transport": target.transport,
        "measured": "sink receive time - time the load generator's source yielded the event; "
        "percentiles over the events of every round",
        "rate_events_per_s": rate,
        "sources": SOURCES,
        "duration_s": duration,
        "rounds": rounds,
        "events": total * rounds,
        "events_per_round": total,
        "order_violations": 0,
        "client_p50_ms": round(p["client"][0], 3),
        "client_p99_ms": round(p["client"][1], 3),
        "client_max_ms": round(p["client"][2], 3),
        "baseline_p50_ms": round(p["baseline"][0], 3),
        "baseline_p99_ms": round(p["baseline"][1], 3),
        "baseline_max_ms": round(p["baseline"][2], 3),
        "added_p99_ms": round(p["client"][1] - p["baseline"][1], 3),
        "client_rounds_p99_ms": round_p99["client"],
        "baseline_rounds_p99_ms": round_p99["baseline"],
    }


def run(smoke: bool) -> list[dict[str, Any]]:
    per_source = 100 if smoke else 10_000
    rounds = 1 if smoke else 3
    rate, duration = (100.0, 1.0) if smoke else (1_000.0, 5.0)
    paced_per_source = round(rate / SOURCES * duration)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        logs = Path(tmp)
        stream_port, paced_port, http_port, nats_port, nats_sink_port = (free_port() for _ in range(5))
        nats_url = f"nats://127.0.0.1:{nats_port}"
        starts = [
            (["stream-gateway", str(stream_port), str(per_source)], stream_port, "stream"),
            (
                ["stream-paced", str(paced_port), str(paced_per_source), str(rate / SOURCES)],
                paced_port,
                "paced",
            ),
            (["http-sink", str(http_port)], http_port, "http-sink"),
        ]
        for args, port, name in starts:
            stack.enter_context(server_process(args, port, logs / f"{name}.log"))
        nats_cmd = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(nats_port)]
        stack.enter_context(process(nats_cmd, nats_port, logs / "nats-server.log"))
        sink_args = ["nats-sink", str(nats_sink_port), nats_url, SUBJECT_PREFIX]
        stack.enter_context(server_process(sink_args, nats_sink_port, logs / "nats-sink.log"))
        targets = [
            Target("http", f"http://127.0.0.1:{http_port}/", http_port),
            Target("nats", f"{nats_url}/{SUBJECT_PREFIX}.{{source}}", nats_sink_port, nats_url),
        ]
        for target in targets:
            results.append(throughput(target, stream_port, per_source, rounds))
        for target in targets:
            results.append(latency(target, paced_port, rate, duration, rounds))
    return results
