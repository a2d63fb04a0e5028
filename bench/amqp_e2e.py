"""AMQP (RabbitMQ) -> gateway (pod mode, a durable queue acked after delivery) -> subscriber, against
bare aio-pika consumers forwarding the same messages with the same guarantee, in the same run.

Processes: a RabbitMQ node (``bench.amqp_bare``: the test harness's, Debian's ``rabbitmq-server``);
a ``nats-server`` (core NATS only: the NATS sink's subscription); two subscribers, each counting
events, checking their order (by number: each message's ``message_id`` is its number, the gateway's
event id ``orders:N``, which the bare consumers give too) and stamping each arrival (``bench.sinks``):
the ``http-sink`` process and the ``nats-sink`` process, subscribed to ``delivered.>``. Measured, each
variant of each round on a **fresh durable queue** filled just before with persistent messages, each
confirmed by the broker (5,000 for the HTTP side, 20,000 for the faster NATS side), and deleted after:

* the gateway as a pod runs it: ``gateway serve amqp`` + ``gateway client``, the source the queue
  (``queueDeclare: {name}``, bound to a direct exchange), each message acked only once the subscriber
  has it (the client acknowledges it on the control channel; ``basic.ack`` with ``multiple`` over the
  contiguous delivered prefix; the prefetch is the client's window, 1,000), to the HTTP sink
  (``--subscriber http://...``) and to the NATS sink (``--subscriber nats://host:port/delivered.{source}``:
  a core NATS publish, one flush per batch, acknowledged once the flush's PONG is in). Once the sink
  has every message the gateway is stopped (SIGTERM) and the queue read back: it must be empty (a
  message left unacked would be back in it, ready), and the stop's seconds are reported;
* bare consumers (``bench.amqp_bare``), the same prefetch: sequential (one at a time: forwarded, then
  acked), pipelined (16 in flight, the delivered prefix acked with ``multiple``; over HTTP order is
  given up) and, to NATS, batched (what has arrived, up to 64, published together, one flush, one
  ack). The queue is read back empty after each.

Throughput is measured at the sink: events over the time from the first to the last it accepted. CPU
per event: the gateway's two processes over the events that arrived after the first fifth; a bare
consumer's is this process's over the whole run (neither counts the sink's or the broker's). Latency,
HTTP sink, at a fixed rate: each consumer on a fresh empty queue; once it consumes and one message
went through (then the sink is reset), this process publishes at RATE for a few seconds, stamping each
message's ``x-sent-at`` header; the sink's arrival time minus that stamp (the gateway forwards the
headers table in its ``headers`` extension, ``{"x-sent-at": "..."}``, the bare consumer as an HTTP
header).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.amqp_bare import EXCHANGE, PREFETCH, SOURCE, Admin, bare_http, bare_nats, rabbitmq
from bench.nats_e2e import (
    FALLBACK_LOG,
    MEASURED_AT,
    NATS_MEASURED_AT,
    PIPELINE,
    SINK_PREFIX,
    TARGET_RATIO,
    VARIANTS,
    WARM_SHARE,
    Round,
    _cpu_keys,
    _cpu_seconds,
    _fallback_line,
    _median,
    _rate,
    _ratio,
    _round_keys,
    _stats,
    _until_events,
)
from bench.procs import free_port, nats_server_binary, process, server_process
from bench.stats import median, percentile

BARE_NATS_SUBJECT = f"{SINK_PREFIX}.{SOURCE}"
BROKER = "RabbitMQ (Debian's rabbitmq-server), one node; durable queues, persistent messages"
BARE_ACK = (
    "sequential: basic.ack of each message once forwarded; pipelined and batched: the contiguous "
    "delivered prefix, basic.ack multiple, sent by an acker task, coalesced (never past a message the "
    "subscriber does not have: the gateway's guarantee); the queue read back empty after"
)


@dataclass(frozen=True)
class Side:
    """One subscriber side: its sink, how many messages its queues hold, the client's URL."""

    name: str
    """``http`` or ``nats``: the prefix of its variants' names (and of their queues)."""
    sink: int
    """The sink's port (the NATS sink's control port)."""
    count: int
    subscriber: str
    """The gateway client's ``--subscriber``."""


@dataclass(frozen=True)
class Setup:
    tmp: Path
    amqp: str
    """The node, ``amqp://guest:guest@127.0.0.1:port/``."""
    nats: str
    """The nats-server of the NATS sink."""
    http_side: Side
    nats_side: Side


@dataclass
class AmqpRound(Round):
    stop_s: dict[str, float] = field(default_factory=dict)
    """A gateway variant's seconds from SIGTERM (the sink had every event) to both processes' exit."""


@dataclass
class Gateway:
    ops: int
    pids: tuple[int, ...]
    client_log: Path
    stopping: float = 0.0
    """When the block ended (``time.monotonic()``): the processes are then stopped."""


@contextlib.contextmanager
def _gateway(setup: Setup, side: Side, queue: str) -> Iterator[Gateway]:
    """The gateway as a pod, consuming the durable ``queue`` (bound to ``EXCHANGE`` by its name) and
    delivering to the side's subscriber."""
    config = setup.tmp / f"{queue}.yaml"
    source = f"url: {setup.amqp}\\nexchangeName: {EXCHANGE}\\nexchangeType: direct\\nroutingKey: {queue}"
    source += f"\\nqueueDeclare: {{name: {queue}}}"
    config.write_text(f'{SOURCE}: "{source}"\n')
    grpc_port, ops = free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    server = [*cli, "serve", "amqp", "--port", str(grpc_port)]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", side.subscriber, "--ops-port", str(ops), "--kind", "amqp"]
    client_log = setup.tmp / f"{queue}-client.log"
    with (
        process(server, grpc_port, setup.tmp / f"{queue}-server.log") as server_proc,
        process(client, ops, client_log) as client_proc,
    ):
        gateway = Gateway(ops, (server_proc.pid, client_proc.pid), client_log)
        yield gateway
        gateway.stopping = time.monotonic()


def _record(result: Round, name: str, stats: dict[str, Any], count: int, *, in_order: bool) -> None:
    """A variant's rate and its sink's CPU share, once its sink had every event, each once (and in
    order, if asked: message numbers start at 0, as the sink's do)."""
    assert stats["events"] == count and stats["unreadable"] == 0, {
        k: stats[k] for k in ("events", "unreadable", "per_source")
    }
    assert not in_order or stats["order_violations"] == 0, {
        k: stats[k] for k in ("events", "order_violations")
    }
    result.rates[name] = _rate(stats)
    result.sink_share[name] = stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9)


async def _left(admin: Admin, queue: str, what: str) -> None:
    """``queue`` must be empty, without consumers, once ``what`` left; then it is deleted."""
    left = await admin.state(queue)
    assert left == (0, 0), f"queue {queue}: (ready, consumers) {left} after {what} left"
    await admin.delete(queue)


async def _gateway_round(
    http: aiohttp.ClientSession, admin: Admin, setup: Setup, side: Side, result: AmqpRound, n: int
) -> None:
    """Run the side's gateway on a fresh full queue until its sink has every event, then stop it:
    its rate, CPU, stream method and stop time; the queue must be empty after."""
    name = f"{side.name}_gateway"
    queue = f"{name}{n}"
    await admin.fill(queue, side.count)
    with _gateway(setup, side, queue) as gateway:
        await _until_events(http, side.sink, max(1, side.count // WARM_SHARE))
        cpu, since = _cpu_seconds(gateway.pids), time.time()
        stats = await _stats(http, side.sink, side.count)
        cpu = _cpu_seconds(gateway.pids) - cpu
    result.stop_s[name] = time.monotonic() - gateway.stopping
    await _left(admin, queue, "the gateway")
    _record(result, name, stats, side.count, in_order=True)
    after = sum(1 for arrival in stats["arrivals"] if arrival > since)
    if after >= side.count // 2:  # else the window was too short to tell (the smoke's few events)
        result.cpu_us[name] = cpu / after * 1e6
    assert FALLBACK_LOG not in gateway.client_log.read_text(), _fallback_line(gateway.client_log)
    result.methods[name] = "StreamEventSource"


async def _round(setup: Setup, n: int) -> AmqpRound:
    result = AmqpRound()
    url = setup.amqp
    admin = await Admin.open(url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
            side = setup.http_side
            await _gateway_round(http, admin, setup, side, result, n)
            for name, inflight in (("http_sequential", 1), ("http_pipelined", PIPELINE)):
                queue = f"{name}{n}"
                await admin.fill(queue, side.count)
                started = time.process_time()
                await bare_http(url, queue, side.sink, side.count, inflight)
                result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
                await admin.delete(queue)
                stats = await _stats(http, side.sink, side.count)
                _record(result, name, stats, side.count, in_order=inflight == 1)
            side = setup.nats_side
            await _gateway_round(http, admin, setup, side, result, n)
            bare = (("sequential", 1, False), ("pipelined", PIPELINE, False), ("batched", 1, True))
            for variant, inflight, batched in bare:
                name = f"nats_{variant}"
                queue = f"{name}{n}"
                await admin.fill(queue, side.count)
                started = time.process_time()
                await bare_nats(url, setup.nats, queue, BARE_NATS_SUBJECT, side.count, inflight, batched)
                result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
                await admin.delete(queue)
                stats = await _stats(http, side.sink, side.count)
                _record(result, name, stats, side.count, in_order=inflight == 1)
    finally:
        await admin.close()
    return result


async def _warm_up(http: aiohttp.ClientSession, admin: Admin, queue: str, sink: int) -> None:
    """Once ``queue`` has its consumer, one message through to the sink; then the sink reset."""
    await admin.until_consumed(queue)
    await admin.paced(queue, 1, 1.0)
    await _until_events(http, sink, 1)
    async with http.post(f"http://127.0.0.1:{sink}/reset"):
        pass


async def _paced(setup: Setup, rate: float, seconds: float) -> dict[str, list[float]]:
    """Each consumer on a fresh empty queue of its own: warmed up, then fed at ``rate``."""
    latencies: dict[str, list[float]] = {}
    url, sink, count = setup.amqp, setup.http_side.sink, int(rate * seconds)
    admin = await Admin.open(url)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
            queue = "paced-gateway"
            await admin.declare(queue)
            with _gateway(setup, setup.http_side, queue):
                await _warm_up(http, admin, queue, sink)
                await admin.paced(queue, count, rate)
                latencies["gateway"] = (await _stats(http, sink, count))["latencies"]
            await _left(admin, queue, "the gateway")
            queue = "paced-sequential"
            await admin.declare(queue)
            consumer = asyncio.ensure_future(bare_http(url, queue, sink, count + 1, 1))
            await _warm_up(http, admin, queue, sink)
            await admin.paced(queue, count, rate)
            await consumer
            latencies["sequential"] = (await _stats(http, sink, count))["latencies"]
            await admin.delete(queue)
    finally:
        await admin.close()
    for name, values in latencies.items():
        assert len(values) == count, (name, len(values), count)
        # A stamp misread (e.g. the first character of the gateway's headers extension) is years off.
        assert all(-1.0 < value < 60.0 for value in values), (name, min(values), max(values))
    return latencies


def _common_keys(rounds: list[AmqpRound], side: str, variants: tuple[str, ...], count: int) -> dict[str, Any]:
    base: list[Round] = [*rounds]
    rates = [_median(base, "rates", f"{side}_{v}") for v in variants]
    keys: dict[str, Any] = {
        "broker": BROKER,
        "events": count,
        "rounds": len(rounds),
        "prefetch": PREFETCH,
        "gateway_events_per_s": round(rates[0]),
    }
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"bare_{v}_events_per_s"] = round(rate)
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"ratio_to_{v}"] = _ratio(rates[0], rate)
    keys["target_ratio_to_sequential"] = TARGET_RATIO
    keys["bare_ack"] = BARE_ACK
    keys["gateway_queue_empty_after"] = True  # asserted: (ready, consumers) == (0, 0) once stopped
    keys["gateway_stop_s"] = [round(r.stop_s[f"{side}_gateway"], 2) for r in rounds]
    keys["stream_method"] = rounds[-1].methods[f"{side}_gateway"]
    return {**keys, **_cpu_keys(base, side, variants), **_round_keys(base, side, variants)}


def _http_result(
    rounds: list[AmqpRound], count: int, paced: dict[str, list[float]], rate: float, seconds: float
) -> dict[str, Any]:
    return {
        "benchmark": "AMQP (RabbitMQ) -> gateway (pod, durable queue acked after delivery) -> HTTP "
        "subscriber, events/s",
        "measured_at": MEASURED_AT,
        **_common_keys(rounds, "http", VARIANTS, count),
        "paced_rate_events_per_s": rate,
        "paced_seconds": seconds,
        "gateway_p50_ms": round(percentile(paced["gateway"], 50) * 1000, 3),
        "gateway_p99_ms": round(percentile(paced["gateway"], 99) * 1000, 3),
        "bare_sequential_p50_ms": round(percentile(paced["sequential"], 50) * 1000, 3),
        "bare_sequential_p99_ms": round(percentile(paced["sequential"], 99) * 1000, 3),
        "paced_stamp": "x-sent-at, read from the gateway's headers extension (ce-headers)",
    }


def _nats_result(rounds: list[AmqpRound], count: int) -> dict[str, Any]:
    return {
        "benchmark": "AMQP (RabbitMQ) -> gateway (pod, durable queue acked after delivery) -> NATS "
        "subscriber (core publish, acked after the flush), events/s",
        "measured_at": NATS_MEASURED_AT,
        "subscriber": f"nats://<nats-server>/{SINK_PREFIX}.{{source}}",
        **_common_keys(rounds, "nats", (*VARIANTS, "batched"), count),
        "gateway_stop_s_median": round(median([r.stop_s["nats_gateway"] for r in rounds]), 2),
    }


def run(smoke: bool) -> list[dict[str, Any]]:
    count, nats_count, rounds = (200, 200, 1) if smoke else (5_000, 20_000, 3)
    rate, seconds = (50.0, 1.0) if smoke else (500.0, 5.0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        nats_port, http_sink, nats_sink = free_port(), free_port(), free_port()
        nats_url = f"nats://127.0.0.1:{nats_port}"
        http_side = Side("http", http_sink, count, f"http://127.0.0.1:{http_sink}/")
        nats_side = Side("nats", nats_sink, nats_count, f"{nats_url}/{SINK_PREFIX}.{{source}}")
        nats_cmd = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(nats_port)]
        with (
            process(nats_cmd, nats_port, tmp / "nats.log"),
            server_process(["http-sink", str(http_sink)], http_sink, tmp / "http-sink.log"),
            server_process(
                ["nats-sink", str(nats_sink), nats_url, SINK_PREFIX], nats_sink, tmp / "nats-sink.log"
            ),
            rabbitmq(tmp / "rabbitmq") as node,
        ):
            setup = Setup(tmp, node.url, nats_url, http_side, nats_side)
            results = [asyncio.run(_round(setup, n)) for n in range(rounds)]
            paced = asyncio.run(_paced(setup, rate, seconds))
    return [_http_result(results, count, paced, rate, seconds), _nats_result(results, nats_count)]
