"""MQTT (mosquitto) -> gateway (pod mode, QoS 1, a persistent session acknowledged after delivery) ->
subscriber, against bare paho-mqtt consumers forwarding the same messages with the same guarantee,
in the same run.

Processes: a mosquitto (``bench.mqtt_bare``: Debian's 2.0, ``max_inflight_messages 0`` and
``max_queued_messages 100000``, so that a session filled beforehand holds a whole round); a
``nats-server`` (core NATS only: the NATS sink's subscription); two subscribers, each counting events,
checking their order (by each message's ``x-seq`` user property, its number from 0: an MQTT event's
id is a uuid) and stamping each arrival (``bench.sinks``): the ``http-sink`` process and the
``nats-sink`` process, subscribed to ``delivered.>``. Measured, each variant of each round on a
**fresh persistent session** of its own (client id and topic): made (clean start off, subscribed at
QoS 1, disconnected), then filled with QoS 1 messages, each PUBACKed by the broker, which queues them
for the session (5,000 for the HTTP side, 20,000 for the faster NATS side); the consumer then resumes
the session, so every variant starts with the whole round waiting, as in the AMQP and Kafka benches:

* the gateway as a pod runs it: ``gateway serve mqtt`` + ``gateway client``, the source the session
  (``qos: 1``, ``protocol: '5'``, ``persistentSession: true``; the client's window, 1,000, its
  Receive Maximum), each message's PUBACK held until the subscriber has it and sent in arrival order,
  to the HTTP sink (``--subscriber http://...``) and to the NATS sink (``--subscriber
  nats://host:port/delivered.{source}``: a core NATS publish, one flush per batch, acknowledged once
  the flush's PONG is in). Once the sink has every message the gateway is stopped (SIGTERM; the stop's
  seconds are reported) and the session resumed: the broker must send nothing (a message left
  unacknowledged would come again at once);
* bare consumers (``bench.mqtt_bare``), the same Receive Maximum: sequential (one at a time: forwarded,
  then its PUBACK), pipelined (16 in flight, the PUBACKs of the contiguous delivered prefix in order;
  over HTTP order is given up) and, to NATS, batched (what has arrived, up to 64, published together,
  one flush, their PUBACKs). The session is resumed after each, and must be empty too.

Throughput is measured at the sink: events over the time from the first to the last it accepted. CPU
per event: the gateway's two processes over the events that arrived after the first fifth; a bare
consumer's is this process's over the whole run (neither counts the sink's, the broker's or the
publisher's). An audited run (``bench.mqtt_audit``), once, HTTP side, not timed: the gateway through a
relay that reads the packets, its PUBACKs checked for order and for coming after the sink had each
message, its CONNECT for the Receive Maximum (mosquitto 2.0.11 sends past it once PUBACKs come back,
to the bare consumers alike: see ``bench.mqtt_audit``). Latency, HTTP sink, at a fixed rate: each
consumer on a fresh empty session; once one message went through (then the sink is reset), a
publisher process of its own (not to share the bare consumer's event loop) publishes at RATE for a
few seconds, stamping each message's ``x-sent-at`` user property: the sink's arrival time minus that
stamp (the gateway forwards the user properties in its ``userproperties`` extension, name -> values,
and so do the bare consumers).
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

from bench import mqtt_audit
from bench.mqtt_bare import (
    BROKER_LIMITS,
    RECEIVE_MAXIMUM,
    SOURCE,
    bare_http,
    bare_nats,
    left,
    mosquitto,
    paced,
    publish,
    session,
)
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
LEFT_WAIT = 0.3
"""Seconds a resumed session is given to send what the broker still holds for it."""
BROKER = "mosquitto 2.0 (Debian), one broker; QoS 1, MQTT 5, persistent sessions: " + ", ".join(BROKER_LIMITS)
RECEIVE_MAXIMUM_NOTE = (
    "asked for by every consumer (the gateway's checked in its CONNECT); mosquitto 2.0.11 sends past it "
    "once PUBACKs come back (eclipse-mosquitto/mosquitto#2301, fixed in 2.0.13), to every consumer alike"
)
FILL = (
    "each variant a fresh persistent session (clean start off, subscribed at QoS 1, disconnected), "
    "then filled with QoS 1 messages (each PUBACKed by the broker) before its consumer resumes it"
)
BARE_ACK = (
    "manual_ack: sequential: each message's PUBACK once forwarded; pipelined and batched: the PUBACKs "
    "of the contiguous delivered prefix, in arrival order, whenever it moved (never one for a message "
    "the subscriber does not have, or before one for an earlier message: the gateway's guarantee); "
    "the session resumed after and found empty"
)


@dataclass(frozen=True)
class Side:
    """One subscriber side: its sink, how many messages its sessions hold, the client's URL."""

    name: str
    """``http`` or ``nats``: the prefix of its variants' names (and of their sessions)."""
    sink: int
    """The sink's port (the NATS sink's control port)."""
    count: int
    subscriber: str
    """The gateway client's ``--subscriber``."""


@dataclass(frozen=True)
class Setup:
    tmp: Path
    broker: int
    """mosquitto's port on 127.0.0.1."""
    nats: str
    """The nats-server of the NATS sink."""
    http_side: Side
    nats_side: Side


@dataclass
class MqttRound(Round):
    stop_s: dict[str, float] = field(default_factory=dict)
    """A gateway variant's seconds from SIGTERM (the sink had every event) to both processes' exit."""


@dataclass
class Gateway:
    ops: int
    pids: tuple[int, ...]
    client_log: Path
    stopping: float = 0.0
    """When the block ended (``time.monotonic()``): the processes are then stopped."""


def _names(name: str) -> tuple[str, str]:
    """A session's client id and topic."""
    return f"bench-{name}", f"bench/{name}"


@contextlib.contextmanager
def _gateway(setup: Setup, side: Side, name: str, broker: int = 0) -> Iterator[Gateway]:
    """The gateway as a pod, resuming session ``name`` (on ``broker``, else the setup's) and
    delivering to the side's subscriber."""
    client_id, topic = _names(name)
    config = setup.tmp / f"{name}.yaml"
    source = f"url: tcp://127.0.0.1:{broker or setup.broker}\\ntopic: {topic}\\nclientId: {client_id}"
    source += "\\nqos: 1\\nprotocol: '5'\\npersistentSession: true"
    config.write_text(f'{SOURCE}: "{source}"\n')
    grpc_port, ops = free_port(), free_port()
    cli = [sys.executable, "-m", "common.cli"]
    server = [*cli, "serve", "mqtt", "--port", str(grpc_port)]
    client = [*cli, "client", "--server", f"127.0.0.1:{grpc_port}", "--event-sources", str(config)]
    client += ["--subscriber", side.subscriber, "--ops-port", str(ops), "--kind", "mqtt"]
    client_log = setup.tmp / f"{name}-client.log"
    with (
        process(server, grpc_port, setup.tmp / f"{name}-server.log") as server_proc,
        process(client, ops, client_log) as client_proc,
    ):
        gateway = Gateway(ops, (server_proc.pid, client_proc.pid), client_log)
        yield gateway
        gateway.stopping = time.monotonic()


def _record(result: Round, name: str, stats: dict[str, Any], count: int, *, in_order: bool) -> None:
    """A variant's rate and its sink's CPU share, once its sink had every event, each once (and in
    order, if asked: ``x-seq`` starts at 0, as the sink's numbers do)."""
    assert stats["events"] == count and stats["unreadable"] == 0, {
        k: stats[k] for k in ("events", "unreadable", "per_source")
    }
    assert not in_order or stats["order_violations"] == 0, {
        k: stats[k] for k in ("events", "order_violations")
    }
    result.rates[name] = _rate(stats)
    result.sink_share[name] = stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9)


async def _fresh(setup: Setup, name: str, count: int) -> tuple[str, str]:
    """Session ``name`` made and filled with ``count`` messages: its client id and topic."""
    client_id, topic = _names(name)
    await session(setup.broker, client_id, topic)
    await publish(setup.broker, topic, count)
    return client_id, topic


async def _empty(setup: Setup, name: str, what: str) -> None:
    """Session ``name`` must be empty once ``what`` left; resumed, it is deleted."""
    client_id, _ = _names(name)
    sent = await left(setup.broker, client_id, LEFT_WAIT)
    assert not sent, f"the broker sent {sent} message(s) of session {client_id} again after {what} left"


async def _gateway_round(
    http: aiohttp.ClientSession, setup: Setup, side: Side, result: MqttRound, n: int
) -> None:
    """Run the side's gateway on a fresh full session until its sink has every event, then stop it:
    its rate, CPU, stream method and stop time; the session must be empty after."""
    name = f"{side.name}_gateway"
    await _fresh(setup, f"{name}{n}", side.count)
    with _gateway(setup, side, f"{name}{n}") as gateway:
        await _until_events(http, side.sink, max(1, side.count // WARM_SHARE))
        cpu, since = _cpu_seconds(gateway.pids), time.time()
        stats = await _stats(http, side.sink, side.count)
        cpu = _cpu_seconds(gateway.pids) - cpu
    result.stop_s[name] = time.monotonic() - gateway.stopping
    await _empty(setup, f"{name}{n}", "the gateway")
    _record(result, name, stats, side.count, in_order=True)
    after = sum(1 for arrival in stats["arrivals"] if arrival > since)
    if after >= side.count // 2:  # else the window was too short to tell (the smoke's few events)
        result.cpu_us[name] = cpu / after * 1e6
    assert FALLBACK_LOG not in gateway.client_log.read_text(), _fallback_line(gateway.client_log)
    result.methods[name] = "StreamEventSource"


async def _round(setup: Setup, n: int) -> MqttRound:
    result = MqttRound()
    port = setup.broker
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        side = setup.http_side
        await _gateway_round(http, setup, side, result, n)
        for name, inflight in (("http_sequential", 1), ("http_pipelined", PIPELINE)):
            client_id, topic = await _fresh(setup, f"{name}{n}", side.count)
            started = time.process_time()
            await bare_http(port, client_id, topic, side.sink, side.count, inflight)
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            await _empty(setup, f"{name}{n}", "the bare consumer")
            stats = await _stats(http, side.sink, side.count)
            _record(result, name, stats, side.count, in_order=inflight == 1)
        side = setup.nats_side
        await _gateway_round(http, setup, side, result, n)
        bare = (("sequential", 1, False), ("pipelined", PIPELINE, False), ("batched", 1, True))
        for variant, inflight, batched in bare:
            name = f"nats_{variant}"
            client_id, topic = await _fresh(setup, f"{name}{n}", side.count)
            started = time.process_time()
            await bare_nats(
                port, client_id, topic, setup.nats, BARE_NATS_SUBJECT, side.count, inflight, batched
            )
            result.cpu_us[name] = (time.process_time() - started) / side.count * 1e6
            await _empty(setup, f"{name}{n}", "the bare consumer")
            stats = await _stats(http, side.sink, side.count)
            _record(result, name, stats, side.count, in_order=inflight == 1)
    return result


async def _audited(setup: Setup) -> dict[str, Any]:
    """The HTTP side's gateway once more, through ``bench.mqtt_audit``'s relay: its PUBACKs checked."""
    side, audit = setup.http_side, mqtt_audit.Audit()
    await _fresh(setup, "audited", side.count)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http,
        mqtt_audit.relay(setup.broker, audit) as relay_port,
    ):
        with _gateway(setup, side, "audited", relay_port):
            stats = await _stats(http, side.sink, side.count)
        _record(MqttRound(), "audited", stats, side.count, in_order=True)
    checked = audit.check(stats["arrivals"], side.count, RECEIVE_MAXIMUM)
    await _empty(setup, "audited", "the audited gateway")
    return checked


async def _warm_up(http: aiohttp.ClientSession, setup: Setup, topic: str) -> None:
    """One message through to the HTTP sink (its consumer runs), then the sink reset."""
    sink = setup.http_side.sink
    await publish(setup.broker, topic, 1)
    await _until_events(http, sink, 1)
    async with http.post(f"http://127.0.0.1:{sink}/reset"):
        pass


async def _paced(setup: Setup, rate: float, seconds: float) -> dict[str, list[float]]:
    """Each consumer on a fresh empty session of its own: warmed up, then fed at ``rate``."""
    latencies: dict[str, list[float]] = {}
    port, sink, count = setup.broker, setup.http_side.sink, int(rate * seconds)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=400)) as http:
        client_id, topic = _names("paced-gateway")
        await session(port, client_id, topic)
        with _gateway(setup, setup.http_side, "paced-gateway"):
            await _warm_up(http, setup, topic)
            await paced(port, topic, count, rate)
            latencies["gateway"] = (await _stats(http, sink, count))["latencies"]
        await _empty(setup, "paced-gateway", "the gateway")
        client_id, topic = _names("paced-sequential")
        await session(port, client_id, topic)
        consumer = asyncio.ensure_future(bare_http(port, client_id, topic, sink, count + 1, 1))
        await _warm_up(http, setup, topic)
        await paced(port, topic, count, rate)
        await consumer
        latencies["sequential"] = (await _stats(http, sink, count))["latencies"]
        await _empty(setup, "paced-sequential", "the bare consumer")
    for name, values in latencies.items():
        assert len(values) == count, (name, len(values), count)
        # A stamp misread (e.g. ce-time, the gateway's receive time) would be near 0 or years off.
        assert all(-1.0 < value < 60.0 for value in values), (name, min(values), max(values))
    return latencies


def _common_keys(rounds: list[MqttRound], side: str, variants: tuple[str, ...], count: int) -> dict[str, Any]:
    base: list[Round] = [*rounds]
    rates = [_median(base, "rates", f"{side}_{v}") for v in variants]
    keys: dict[str, Any] = {
        "broker": BROKER,
        "events": count,
        "rounds": len(rounds),
        "receive_maximum": RECEIVE_MAXIMUM,
        "receive_maximum_note": RECEIVE_MAXIMUM_NOTE,
        "fill": FILL,
        "gateway_events_per_s": round(rates[0]),
    }
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"bare_{v}_events_per_s"] = round(rate)
    for v, rate in zip(variants[1:], rates[1:], strict=True):
        keys[f"ratio_to_{v}"] = _ratio(rates[0], rate)
    keys["target_ratio_to_sequential"] = TARGET_RATIO
    keys["bare_ack"] = BARE_ACK
    keys["gateway_session_empty_after"] = True  # asserted: the resumed session sent nothing
    keys["gateway_stop_s"] = [round(r.stop_s[f"{side}_gateway"], 2) for r in rounds]
    keys["stream_method"] = rounds[-1].methods[f"{side}_gateway"]
    return {**keys, **_cpu_keys(base, side, variants), **_round_keys(base, side, variants)}


def _http_result(
    rounds: list[MqttRound],
    count: int,
    paced_latencies: dict[str, list[float]],
    audit: dict[str, Any],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    latency = paced_latencies
    return {
        "benchmark": "MQTT (mosquitto) -> gateway (pod, QoS 1 persistent session, PUBACK after delivery) "
        "-> HTTP subscriber, events/s",
        "measured_at": MEASURED_AT,
        **_common_keys(rounds, "http", VARIANTS, count),
        "puback_audit": audit,
        "paced_rate_events_per_s": rate,
        "paced_seconds": seconds,
        "gateway_p50_ms": round(percentile(latency["gateway"], 50) * 1000, 3),
        "gateway_p99_ms": round(percentile(latency["gateway"], 99) * 1000, 3),
        "bare_sequential_p50_ms": round(percentile(latency["sequential"], 50) * 1000, 3),
        "bare_sequential_p99_ms": round(percentile(latency["sequential"], 99) * 1000, 3),
        "paced_stamp": "x-sent-at, an MQTT 5 user property, read from the userproperties extension "
        "(ce-userproperties: JSON, name -> values)",
        "paced_publisher": "bench.mqtt_publish, a process of its own",
    }


def _nats_result(rounds: list[MqttRound], count: int) -> dict[str, Any]:
    return {
        "benchmark": "MQTT (mosquitto) -> gateway (pod, QoS 1 persistent session, PUBACK after delivery) "
        "-> NATS subscriber (core publish, acked after the flush), events/s",
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
        broker, nats_port, http_sink, nats_sink = free_port(), free_port(), free_port(), free_port()
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
            mosquitto(broker, tmp / "mosquitto"),
        ):
            setup = Setup(tmp, broker, nats_url, http_side, nats_side)
            results = [asyncio.run(_round(setup, n)) for n in range(rounds)]
            audit = asyncio.run(_audited(setup))
            latencies = asyncio.run(_paced(setup, rate, seconds))
    return [_http_result(results, count, latencies, audit, rate, seconds), _nats_result(results, nats_count)]
