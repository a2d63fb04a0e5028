"""JetStream -> gateway (pod mode, acknowledging) -> subscriber, against bare nats-py consumers
forwarding the same messages with the same guarantee, in the same run; and the same gateway without
acknowledgements, to show what they cost.

Processes: a ``nats-server`` with JetStream holding messages published beforehand in stream
``ORDERS``, each subscriber side's on a subject of its own (5,000 on ``orders.new`` for the HTTP side,
20,000 on ``orders.bulk`` for the faster NATS side, so that its rounds last a second or more); two
subscribers, each counting events, checking their order and stamping each arrival (``bench.sinks``):
the ``http-sink`` process and the ``nats-sink`` process, subscribed on the same ``nats-server`` to
``delivered.>`` (not captured by the stream). Measured, each round on a fresh durable consumer that
starts at the beginning of its side's messages:

* the gateway as a pod runs it: ``gateway serve nats`` + ``gateway client`` (each message acked to
  JetStream only once the subscriber has it, through the control channel), to the HTTP sink
  (``--subscriber http://...``) and to the NATS sink (``--subscriber nats://host:port/delivered.{source}``:
  a core NATS publish, one flush per batch, acked once the flush's PONG is in);
* the same gateway without acknowledgements, HTTP sink: the server is ``bench.v011_server`` (``gateway
  serve`` with ``StreamEventSource`` answering UNIMPLEMENTED), so the real client falls back to v0.11's
  ``StartEventSource`` and the server acks each JetStream message once it is written to the gRPC
  stream; the client's log is checked for the fallback. With and without run in alternating order;
* bare consumers (``bench.nats_bare``), acking each message only once the subscriber has it, as the
  gateway: sequential (one at a time, in order), pipelined (16 in flight; over HTTP order is given
  up) and, to NATS, batched (a fetch of up to 64 published, one flush, all acked).

Throughput is measured at the sink: events over the time from the first to the last it accepted.
CPU per event: the gateway's two processes over the events that arrived after the first fifth (start
up excluded); a bare consumer's is this process's over the whole run (neither counts the sink's or
the nats-server's). Latency, HTTP sink, at a fixed rate: each consumer on a durable that takes only
new messages, while this process publishes at RATE for a few seconds, stamping each message's
``x-sent-at`` header; the sink's arrival time minus that stamp (the gateway forwards NATS headers in
its ``headers`` attribute, the bare consumers as an HTTP header).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats

from bench.nats_bare import SENT_AT, STREAM, SUBJECT, bare_http, bare_nats
from bench.procs import free_port, nats_server_binary, process, server_process
from bench.stats import median, percentile

PIPELINE = 16
VARIANTS = ("gateway", "sequential", "pipelined")
"""What each subscriber side measures (the NATS side adds ``batched``)."""
TARGET_RATIO = 1.0
"""The gateway against the sequential bare consumer: at least as fast."""
TARGET_ACK_RATIO = 0.85
"""The gateway with acknowledgements against the same without: at most 15 % slower."""
MEASURED_AT = "the sink process, when it has read the POST (before its 200)"
NATS_MEASURED_AT = "the nats-sink process, when its subscription callback gets the message"
SINK_PREFIX = "delivered"
"""The NATS sink takes ``delivered.>``; the gateway publishes on ``delivered.<source>``."""
BARE_NATS_SUBJECT = f"{SINK_PREFIX}.orders"
"""Where the bare consumers publish: the gateway's subject for its source ``orders``."""
FALLBACK_LOG = "using StartEventSource"
"""What the client logs when the server has no control channel (``common.client.lifecycle``)."""
WARM_SHARE = 5
"""CPU per event is counted after the first 1/WARM_SHARE of the events arrived (start up excluded)."""


@dataclass(frozen=True)
class Side:
    """One subscriber side: its sink, the stream's messages its consumers read, the client's URL."""

    name: str
    """``http`` or ``nats``: the prefix of its variants' names."""
    sink: int
    """The sink's port (the NATS sink's control port)."""
    subject: str
    """The consumers' filter in the stream: each side has messages of its own."""
    count: int
    subscriber: str
    """The gateway client's ``--subscriber``."""


@dataclass(frozen=True)
class Setup:
    """What a round runs against."""

    tmp: Path
    url: str
    """The nats-server (JetStream, and the NATS sink's subscription)."""
    http: Side
    nats: Side


@dataclass
class Round:
    """One round's figures, by variant (``http_gateway``, ``nats_sequential``, ...)."""

    rates: dict[str, float] = field(default_factory=dict)
    cpu_us: dict[str, float] = field(default_factory=dict)
    """CPU microseconds per event; a gateway's only when enough events arrived after the warm-up."""
    sink_share: dict[str, float] = field(default_factory=dict)
    """The sink's CPU seconds over its arrival window (near 1: the sink was the bottleneck)."""
    methods: dict[str, str] = field(default_factory=dict)
    """The gateway variants' stream method, as the client's log says."""
    fallback_log: str = ""
    """The no-ack client's log line saying it fell back to ``StartEventSource``."""


@dataclass(frozen=True)
class Gateway:
    ops: int
    pids: tuple[int, ...]
    client_log: Path


async def _publish(url: str, sides: tuple[Side, ...]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=[f"{SUBJECT}.>"])
    body = b'{"order": "' + b"x" * 200 + b'"}'
    headers = {"Content-Type": "application/json"}
    for side in sides:
        acks = [js.publish(side.subject, body, headers=headers) for _ in range(side.count)]
        for start in range(0, len(acks), 500):
            await asyncio.gather(*acks[start : start + 500])
    await nc.close()


async def _until_events(http: aiohttp.ClientSession, sink: int, count: int) -> None:
    """Until the sink has ``count`` events, polling without setting its target (the sink's ``/stats``
    wait is for one target per reset: the final ``_stats`` sets it)."""
    for _ in range(30_000):
        async with http.get(f"http://127.0.0.1:{sink}/stats") as r:
            if (await r.json())["events"] >= count:
                return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the sink on {sink} did not get {count} events")


async def _stats(http: aiohttp.ClientSession, sink: int, count: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{sink}/stats", params={"count": count, "timeout": 300}) as r:
        stats: dict[str, Any] = await r.json()
    async with http.post(f"http://127.0.0.1:{sink}/reset"):
        pass
    return stats


def _rate(stats: dict[str, Any]) -> float:
    span = stats["last"] - stats["first"]
    return (stats["events"] - 1) / span if span > 0 else 0.0


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """User plus system CPU seconds of processes ``pids`` so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _fallback_line(client_log: Path) -> str:
    """The client's log line saying it uses ``StartEventSource`` (no acknowledgements); "" if none."""
    return next((line for line in client_log.read_text().splitlines() if FALLBACK_LOG in line), "")


@contextlib.contextmanager
def _gateway(
    tmp: Path, url: str, side: Side, durable: str, *, new: bool = False, acknowledged: bool = True
) -> Iterator[Gateway]:
    """The gateway as a pod, consuming ``durable`` (the side's messages) and delivering to the side's
    subscriber; without ``acknowledged``, its server has no control channel (``bench.v011_server``)."""
    config = tmp / f"{durable}.yaml"
    source = f"url: {url}\\nsubject: {side.subject}\\njetStream:\\n  stream: {STREAM}\\n  durable: {durable}"
    if new:
        source += "\\n  deliverPolicy: new"
    config.write_text(f'orders: "{source}"\n')
    grpc_port, ops = free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    server = [*cli] if acknowledged else [sys.executable, "-m", "bench.v011_server"]
    server += ["serve", "nats", "--port", str(grpc_port)]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", side.subscriber, "--ops-port", str(ops), "--kind", "nats"]
    client_log = tmp / f"{durable}-client.log"
    with (
        process(server, grpc_port, tmp / f"{durable}-server.log") as server_proc,
        process(client, ops, client_log) as client_proc,
    ):
        yield Gateway(ops, (server_proc.pid, client_proc.pid), client_log)


def _record(result: Round, name: str, stats: dict[str, Any], *, in_order: bool) -> None:
    """A variant's rate and its sink's CPU share, once its sink had every event (in order if asked)."""
    assert stats["events"] >= 1 and stats["unreadable"] == 0, stats
    # Stream sequences start at 1 (or after the other side's) where the sink counts from 0: one
    # "violation" is the first event.
    assert not in_order or stats["order_violations"] <= 1, stats
    result.rates[name] = _rate(stats)
    result.sink_share[name] = stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9)


async def _gateway_round(
    http: aiohttp.ClientSession, setup: Setup, side: Side, result: Round, n: int, *, acknowledged: bool
) -> None:
    """Run the side's gateway until its sink has every event: its rate, CPU and stream method."""
    name = f"{side.name}_gateway" if acknowledged else f"{side.name}_gateway_no_ack"
    with _gateway(setup.tmp, setup.url, side, f"{name}{n}", acknowledged=acknowledged) as gateway:
        await _until_events(http, side.sink, max(1, side.count // WARM_SHARE))
        cpu, since = _cpu_seconds(gateway.pids), time.time()
        stats = await _stats(http, side.sink, side.count)
        cpu = _cpu_seconds(gateway.pids) - cpu
    assert stats["events"] >= side.count, stats
    _record(result, name, stats, in_order=True)
    after = sum(1 for arrival in stats["arrivals"] if arrival > since)
    if after >= side.count // 2:  # else the window was too short to tell (the smoke's few events)
        result.cpu_us[name] = cpu / after * 1e6
    fallback = _fallback_line(gateway.client_log)
    result.methods[name] = "StartEventSource" if fallback else "StreamEventSource"
    result.fallback_log = fallback or result.fallback_log


async def _round(setup: Setup, n: int) -> Round:
    result = Round()
    url, side = setup.url, setup.http
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        for acknowledged in (True, False) if n % 2 == 0 else (False, True):
            await _gateway_round(http, setup, side, result, n, acknowledged=acknowledged)
        for name, inflight in (("http_sequential", 1), ("http_pipelined", PIPELINE)):
            started = time.process_time()
            await bare_http(url, side.subject, side.sink, side.count, f"{name}{n}", inflight)
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            stats = await _stats(http, side.sink, side.count)
            assert stats["events"] >= side.count, stats
            _record(result, name, stats, in_order=inflight == 1)
        side = setup.nats
        await _gateway_round(http, setup, side, result, n, acknowledged=True)
        bare = (("nats_sequential", 1, False), ("nats_pipelined", PIPELINE, False), ("nats_batched", 1, True))
        for name, inflight, batched in bare:
            started = time.process_time()
            await bare_nats(url, side.subject, BARE_NATS_SUBJECT, side.count, f"{name}{n}", inflight, batched)
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            stats = await _stats(http, side.sink, side.count)
            assert stats["events"] >= side.count, stats
            _record(result, name, stats, in_order=inflight == 1)
    # The no-ack variant must really have run without acknowledgements, and the others with them.
    assert result.methods["http_gateway_no_ack"] == "StartEventSource", result.methods
    assert result.methods["http_gateway"] == result.methods["nats_gateway"] == "StreamEventSource"
    return result


async def _publish_paced(url: str, subject: str, rate: float, seconds: float) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = b'{"order": "' + b"x" * 200 + b'"}'
    count, started = int(rate * seconds), time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        headers = {"Content-Type": "application/json", SENT_AT: repr(time.time())}
        await js.publish(subject, body, headers=headers)
    await nc.close()
    return count


async def _until_serving(http: aiohttp.ClientSession, ops: int) -> None:
    """Until the client says the source runs (its durable then exists and takes new messages)."""
    for _ in range(600):
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{ops}/readyz") as r:
                node = (await r.json()).get("nodes", {}).get("orders", {})
                if node.get("phase") == "Running":
                    return
        await asyncio.sleep(0.05)
    raise TimeoutError("the gateway's source did not run")


async def _paced(setup: Setup, rate: float, seconds: float) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    url, side = setup.url, setup.http
    sink = side.sink
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        with _gateway(setup.tmp, url, side, "paced-gw", new=True) as gateway:
            await _until_serving(http, gateway.ops)
            count = await _publish_paced(url, side.subject, rate, seconds)
            latencies["gateway"] = (await _stats(http, sink, count))["latencies"]
        ready = asyncio.Event()
        consumer = asyncio.ensure_future(
            bare_http(url, side.subject, sink, int(rate * seconds), "paced-seq", 1, ready)
        )
        await ready.wait()
        count = await _publish_paced(url, side.subject, rate, seconds)
        await consumer
        latencies["sequential"] = (await _stats(http, sink, count))["latencies"]
    return latencies


def _median(rounds: list[Round], figure: str, name: str) -> float:
    return median([getattr(r, figure)[name] for r in rounds])


def _median_cpu(rounds: list[Round], name: str) -> float | None:
    """The median CPU us per event of the rounds that could tell it; None if none could."""
    values = [r.cpu_us[name] for r in rounds if name in r.cpu_us]
    return round(median(values), 1) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _http_result(
    rounds: list[Round], count: int, paced: dict[str, list[float]], rate: float
) -> dict[str, Any]:
    gateway, sequential, pipelined = (_median(rounds, "rates", f"http_{v}") for v in VARIANTS)
    return {
        "benchmark": "JetStream -> gateway (pod, acked after delivery) -> HTTP subscriber, events/s",
        "measured_at": MEASURED_AT,
        "events": count,
        "rounds": len(rounds),
        "gateway_events_per_s": round(gateway),
        "bare_sequential_events_per_s": round(sequential),
        "bare_pipelined_events_per_s": round(pipelined),
        "ratio_to_sequential": _ratio(gateway, sequential),
        "ratio_to_pipelined": _ratio(gateway, pipelined),
        "target_ratio_to_sequential": TARGET_RATIO,
        **_cpu_keys(rounds, "http", VARIANTS),
        **_round_keys(rounds, "http", VARIANTS),
        "paced_rate_events_per_s": rate,
        "gateway_p50_ms": round(percentile(paced["gateway"], 50) * 1000, 3),
        "gateway_p99_ms": round(percentile(paced["gateway"], 99) * 1000, 3),
        "bare_sequential_p50_ms": round(percentile(paced["sequential"], 50) * 1000, 3),
        "bare_sequential_p99_ms": round(percentile(paced["sequential"], 99) * 1000, 3),
    }


def _nats_result(rounds: list[Round], count: int) -> dict[str, Any]:
    variants = (*VARIANTS, "batched")
    gateway, sequential, pipelined, batched = (_median(rounds, "rates", f"nats_{v}") for v in variants)
    return {
        "benchmark": "JetStream -> gateway (pod, acked after delivery) -> NATS subscriber (core publish, "
        "acked after the flush), events/s",
        "measured_at": NATS_MEASURED_AT,
        "subscriber": f"nats://<nats-server>/{SINK_PREFIX}.{{source}}",
        "events": count,
        "rounds": len(rounds),
        "gateway_events_per_s": round(gateway),
        "bare_sequential_events_per_s": round(sequential),
        "bare_pipelined_events_per_s": round(pipelined),
        "bare_batched_events_per_s": round(batched),
        "ratio_to_sequential": _ratio(gateway, sequential),
        "ratio_to_pipelined": _ratio(gateway, pipelined),
        "ratio_to_batched": _ratio(gateway, batched),
        "target_ratio_to_sequential": TARGET_RATIO,
        **_cpu_keys(rounds, "nats", variants),
        **_round_keys(rounds, "nats", variants),
    }


def _ack_result(rounds: list[Round], count: int) -> dict[str, Any]:
    acked = _median(rounds, "rates", "http_gateway")
    unacked = _median(rounds, "rates", "http_gateway_no_ack")
    paired = [
        ratio
        for r in rounds
        if (ratio := _ratio(r.rates["http_gateway"], r.rates["http_gateway_no_ack"])) is not None
    ]
    acked_cpu = _median_cpu(rounds, "http_gateway")
    unacked_cpu = _median_cpu(rounds, "http_gateway_no_ack")
    return {
        "benchmark": "the acknowledgement's cost: JetStream -> gateway (pod) -> HTTP subscriber, acked after "
        "delivery (StreamEventSource) vs acked once written to the stream (a v0.11 server: "
        "StartEventSource), events/s",
        "measured_at": MEASURED_AT,
        "events": count,
        "rounds": len(rounds),
        "gateway_acked_events_per_s": round(acked),
        "gateway_unacked_events_per_s": round(unacked),
        "ratio_acked_to_unacked": _ratio(acked, unacked),
        # Each round's pair, measured back to back (in alternating order): steadier than the ratio of
        # medians when the machine's speed drifts between rounds.
        "ratio_acked_to_unacked_rounds": paired,
        "ratio_acked_to_unacked_median_of_rounds": median(paired) if paired else None,
        "target_ratio_acked_to_unacked": TARGET_ACK_RATIO,
        "gateway_acked_cpu_us_per_event": acked_cpu,
        "gateway_unacked_cpu_us_per_event": unacked_cpu,
        "cpu_ratio_acked_to_unacked": _ratio(acked_cpu, unacked_cpu),
        "sink_cpu_share_acked": round(_median(rounds, "sink_share", "http_gateway"), 2),
        "sink_cpu_share_unacked": round(_median(rounds, "sink_share", "http_gateway_no_ack"), 2),
        "gateway_acked_rounds": [round(r.rates["http_gateway"]) for r in rounds],
        "gateway_unacked_rounds": [round(r.rates["http_gateway_no_ack"]) for r in rounds],
        "stream_method_acked": rounds[-1].methods["http_gateway"],
        "stream_method_unacked": rounds[-1].methods["http_gateway_no_ack"],
        "unacked_client_log": rounds[-1].fallback_log,
    }


def _cpu_keys(rounds: list[Round], side: str, variants: tuple[str, ...]) -> dict[str, float | None]:
    """``gateway_cpu_us_per_event``, ``bare_sequential_cpu_us_per_event``, ... (medians), and each
    variant's ``sink_cpu_share_...`` (the sink's CPU over its arrival window: near 1, it was the limit)."""
    keys: dict[str, float | None] = {}
    for v in variants:
        keys[f"{'' if v == 'gateway' else 'bare_'}{v}_cpu_us_per_event"] = _median_cpu(rounds, f"{side}_{v}")
    for v in variants:
        keys[f"sink_cpu_share_{v}"] = round(_median(rounds, "sink_share", f"{side}_{v}"), 2)
    return keys


def _round_keys(rounds: list[Round], side: str, variants: tuple[str, ...]) -> dict[str, list[int]]:
    """``gateway_rounds``, ``sequential_rounds``, ...: each round's events/s."""
    return {f"{v}_rounds": [round(r.rates[f"{side}_{v}"]) for r in rounds] for v in variants}


def run(smoke: bool) -> list[dict[str, Any]]:
    count, nats_count, rounds = (200, 200, 1) if smoke else (5_000, 20_000, 3)
    rate, seconds = (50.0, 1.0) if smoke else (500.0, 5.0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port, http_sink, nats_sink = free_port(), free_port(), free_port()
        url = f"nats://127.0.0.1:{port}"
        http_side = Side("http", http_sink, f"{SUBJECT}.new", count, f"http://127.0.0.1:{http_sink}/")
        nats_side = Side("nats", nats_sink, f"{SUBJECT}.bulk", nats_count, f"{url}/{SINK_PREFIX}.{{source}}")
        nats_cmd = [
            str(nats_server_binary()),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-js",
            "-sd",
            str(tmp / "js"),
        ]
        with (
            process(nats_cmd, port, tmp / "nats.log"),
            server_process(["http-sink", str(http_sink)], http_sink, tmp / "http-sink.log"),
            server_process(["nats-sink", str(nats_sink), url, SINK_PREFIX], nats_sink, tmp / "nats-sink.log"),
        ):
            setup = Setup(tmp, url, http_side, nats_side)
            asyncio.run(_publish(url, (http_side, nats_side)))
            results = [asyncio.run(_round(setup, n)) for n in range(rounds)]
            paced = asyncio.run(_paced(setup, rate, seconds))
    return [
        _http_result(results, count, paced, rate),
        _nats_result(results, nats_count),
        _ack_result(results, count),
    ]
