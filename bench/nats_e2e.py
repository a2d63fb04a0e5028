"""JetStream -> gateway (pod mode, acknowledging) -> HTTP subscriber, against bare nats-py consumers
forwarding the same messages with the same guarantee, in the same run.

Processes: a ``nats-server`` with JetStream holding N messages published beforehand on ``orders.*``
(stream ``ORDERS``); the subscriber is the ``http-sink`` process (``bench.sinks``), which counts
events, checks their order and stamps each arrival. Measured, alternately, each round on a fresh
durable consumer that starts at the beginning of the stream:

* the gateway as a pod runs it: ``gateway serve nats`` + ``gateway client`` (each message acked to
  JetStream only once the subscriber has answered 200, through the control channel);
* a sequential bare consumer: one nats-py pull consumer; per message, POST it (binary mode, the same
  ``ce-*`` headers), then ack it once the 200 is in, one at a time (in order, as the gateway);
* a pipelined bare consumer: the same with 16 POSTs in flight, each acked after its 200 (order given
  up).

Throughput is measured at the sink: events over the time from the first to the last it accepted.
Latency, at a fixed rate: each consumer on a durable that takes only new messages, while this
process publishes at RATE for a few seconds, stamping each message's ``x-sent-at`` header; the sink's
arrival time minus that stamp (the gateway forwards NATS headers in its ``headers`` attribute, the
bare consumers as an HTTP header).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.procs import free_port, nats_server_binary, process, server_process
from bench.stats import median, percentile

STREAM, SUBJECT = "ORDERS", "orders"
SENT_AT = "x-sent-at"
"""The publisher's send time (``time.time()``), a NATS header the sink reads (``bench.sinks``)."""
PIPELINE = 16
TARGET_RATIO = 1.0
"""The gateway against the sequential bare consumer: at least as fast."""
MEASURED_AT = "the sink process, when it has read the POST (before its 200)"


async def _publish(url: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=[f"{SUBJECT}.>"])
    body = b'{"order": "' + b"x" * 200 + b'"}'
    acks = [
        js.publish(f"{SUBJECT}.new", body, headers={"Content-Type": "application/json"}) for _ in range(count)
    ]
    for start in range(0, len(acks), 500):
        await asyncio.gather(*acks[start : start + 500])
    await nc.close()


async def _stats(http: aiohttp.ClientSession, sink: int, count: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{sink}/stats", params={"count": count, "timeout": 300}) as r:
        stats: dict[str, Any] = await r.json()
    async with http.post(f"http://127.0.0.1:{sink}/reset"):
        pass
    return stats


def _rate(stats: dict[str, Any]) -> float:
    span = stats["last"] - stats["first"]
    return (stats["events"] - 1) / span if span > 0 else 0.0


async def _bare(
    url: str, sink: int, count: int, durable: str, inflight: int, ready: asyncio.Event | None = None
) -> None:
    """A bare nats-py pull consumer: POST each message, ack it once the subscriber answered 200; with
    ``ready``, on a durable that takes only new messages, set once it is subscribed."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW) if ready is not None else None
    sub = await js.pull_subscribe(f"{SUBJECT}.>", durable=durable, stream=STREAM, config=config)
    if ready is not None:
        ready.set()
    gate = asyncio.Semaphore(inflight)
    done = 0
    async with aiohttp.ClientSession() as http:

        async def forward(msg: Any) -> None:
            nonlocal done
            assert msg.metadata is not None
            headers = {
                "ce-specversion": "1.0",
                "ce-id": f"bare:{STREAM}:{msg.metadata.sequence.stream}",
                "ce-source": "bench-gateway",
                "ce-type": "nats",
                "ce-subject": "orders",
                "Content-Type": "application/json",
            }
            if msg.headers and SENT_AT in msg.headers:
                headers[SENT_AT] = msg.headers[SENT_AT]
            try:
                async with http.post(f"http://127.0.0.1:{sink}/", data=msg.data, headers=headers) as r:
                    await r.read()
                await msg.ack()
                done += 1
            finally:
                gate.release()

        pending: set[asyncio.Task[None]] = set()
        while done + len(pending) < count:
            for msg in await sub.fetch(min(64, count - done - len(pending)), timeout=10):
                await gate.acquire()
                if inflight == 1:
                    await forward(msg)
                    continue
                task = asyncio.ensure_future(forward(msg))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    await nc.close()


@contextlib.contextmanager
def _gateway(tmp: Path, url: str, sink: int, durable: str, *, new: bool = False) -> Iterator[int]:
    """The gateway as a pod, consuming ``durable``; yields the client's ops port."""
    config = tmp / f"{durable}.yaml"
    source = f"url: {url}\\nsubject: {SUBJECT}.>\\njetStream:\\n  stream: {STREAM}\\n  durable: {durable}"
    if new:
        source += "\\n  deliverPolicy: new"
    config.write_text(f'orders: "{source}"\n')
    grpc_port, ops = free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", f"http://127.0.0.1:{sink}/", "--ops-port", str(ops), "--kind", "nats"]
    with (
        process([*cli, "serve", "nats", "--port", str(grpc_port)], grpc_port, tmp / f"{durable}-server.log"),
        process(client, ops, tmp / f"{durable}-client.log"),
    ):
        yield ops


async def _round(tmp: Path, url: str, sink: int, count: int, n: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        with _gateway(tmp, url, sink, f"gw{n}"):
            stats = await _stats(http, sink, count)
        # Stream sequences start at 1 where the sink counts from 0: one "violation" is the first event.
        assert stats["events"] >= count and stats["order_violations"] <= 1, stats
        rates["gateway"] = _rate(stats)
        for name, inflight in (("sequential", 1), ("pipelined", PIPELINE)):
            await _bare(url, sink, count, f"{name}{n}", inflight)
            stats = await _stats(http, sink, count)
            assert stats["events"] >= count, stats
            rates[name] = _rate(stats)
    return rates


async def _publish_paced(url: str, rate: float, seconds: float) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = b'{"order": "' + b"x" * 200 + b'"}'
    count, started = int(rate * seconds), time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        headers = {"Content-Type": "application/json", SENT_AT: repr(time.time())}
        await js.publish(f"{SUBJECT}.new", body, headers=headers)
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


async def _paced(tmp: Path, url: str, sink: int, rate: float, seconds: float) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        with _gateway(tmp, url, sink, "paced-gw", new=True) as ops:
            await _until_serving(http, ops)
            count = await _publish_paced(url, rate, seconds)
            latencies["gateway"] = (await _stats(http, sink, count))["latencies"]
        ready = asyncio.Event()
        consumer = asyncio.ensure_future(_bare(url, sink, int(rate * seconds), "paced-seq", 1, ready))
        await ready.wait()
        count = await _publish_paced(url, rate, seconds)
        await consumer
        latencies["sequential"] = (await _stats(http, sink, count))["latencies"]
    return latencies


def run(smoke: bool) -> dict[str, Any]:
    count, rounds = (200, 1) if smoke else (5_000, 3)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port, sink = free_port(), free_port()
        url = f"nats://127.0.0.1:{port}"
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
            server_process(["http-sink", str(sink)], sink, tmp / "sink.log"),
        ):
            asyncio.run(_publish(url, count))
            results = [asyncio.run(_round(tmp, url, sink, count, n)) for n in range(rounds)]
            rate, seconds = (50.0, 1.0) if smoke else (500.0, 5.0)
            paced = asyncio.run(_paced(tmp, url, sink, rate, seconds))
    gateway = median([r["gateway"] for r in results])
    sequential = median([r["sequential"] for r in results])
    pipelined = median([r["pipelined"] for r in results])
    return {
        "benchmark": "JetStream -> gateway (pod, acked after delivery) -> HTTP subscriber, events/s",
        "measured_at": MEASURED_AT,
        "events": count,
        "rounds": rounds,
        "gateway_events_per_s": round(gateway),
        "bare_sequential_events_per_s": round(sequential),
        "bare_pipelined_events_per_s": round(pipelined),
        "ratio_to_sequential": round(gateway / sequential, 3) if sequential else None,
        "ratio_to_pipelined": round(gateway / pipelined, 3) if pipelined else None,
        "target_ratio_to_sequential": TARGET_RATIO,
        "gateway_rounds": [round(r["gateway"]) for r in results],
        "sequential_rounds": [round(r["sequential"]) for r in results],
        "pipelined_rounds": [round(r["pipelined"]) for r in results],
        "paced_rate_events_per_s": rate,
        "gateway_p50_ms": round(percentile(paced["gateway"], 50) * 1000, 3),
        "gateway_p99_ms": round(percentile(paced["gateway"], 99) * 1000, 3),
        "bare_sequential_p50_ms": round(percentile(paced["sequential"], 50) * 1000, 3),
        "bare_sequential_p99_ms": round(percentile(paced["sequential"], 99) * 1000, 3),
    }
