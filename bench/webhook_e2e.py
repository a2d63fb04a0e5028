"""The webhook gateway end to end: HTTP POST -> gateway -> HTTP subscriber, its throughput and the
latency it adds at 1,000 events/s, against a bare aiohttp relay in the same run.

Processes, each its own:

* the subscriber: ``bench.servers http-sink``, which counts events per source, checks their order per
  load-generator worker, stamps each arrival, and reads the load generator's send time from the
  event (``X-Sent-At`` among the request headers the event forwards in ``ce-headers``);
* the system under test, run as a pod runs it: ``gateway serve webhook`` and ``gateway client`` in two
  processes talking gRPC over loopback, one endpoint ``POST /bench``, delivering in binary mode to the
  sink (``BENCH_WEBHOOK_MODE=standalone`` measures ``gateway run webhook``, both in one process,
  instead); its CPU is both processes' together;
* the baseline: ``bench.servers relay``, a bare aiohttp server whose handler reads the body, POSTs
  the same CloudEvent (the same ``Content-Type``, ``ce-*`` headers and body, written by
  ``common.client.cloudevent.encode``) to the sink with one shared keep-alive session, and answers
  200 once that POST returns;
* the load generator: ``bench.servers load``, one per measured run, CONCURRENCY workers (the same for
  both targets) POSTing small JSON bodies over keep-alive connections, each with ``X-Request-Id``
  ``w<worker>:<n>`` and ``X-Sent-At`` (its ``time.time()`` at send).

Each is measured twice: with the gateway delivering each source's events in order, one at a time
(the default), and with ``?inflight=16`` on its subscriber URL, as many deliveries in flight as the
relay can have (order across a source's events given up; each worker's order is still counted).

Throughput (unpaced): events the sink accepted over the time from the load generator's first send to
the sink's last arrival. Latency (paced): the sink's arrival time minus ``X-Sent-At``; percentiles
over the events of every round. Rounds alternate gateway and relay; throughput is the median round.

``BENCH_WEBHOOK_PROFILE=FILE`` runs the gateway's process that serves HTTP under cProfile, written to
FILE at its exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import ROOT, free_port, process, server_process
from bench.servers import RELAY_SOURCE
from bench.stats import median, percentile

CONCURRENCY = 16
TARGET_RATIO = 0.8
TARGET_ADDED_P99_MS = 2.0
ENDPOINT = "/bench"
LOOPS = ("asyncio", "uvloop")
"""The gateway is measured on each event loop (``--loop``), both processes on the same one."""
GATEWAYS = tuple("gateway" if loop == "asyncio" else f"gateway_{loop}" for loop in LOOPS)
WHO = (*GATEWAYS, "relay")
MODE = os.environ.get("BENCH_WEBHOOK_MODE", "pod")
"""``pod``: the gateway as two processes (server, client); ``standalone``: ``gateway run``, one process."""
MEASURED_AT = (
    "the sink process, when it has read the POST (before its 200); send time stamped by the load "
    "generator process just before each POST"
)

CONFIG = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: webhook-bench
data:
  {source}: |-
    endpoint: {endpoint}
    method: POST
    port: "{port}"
"""


@dataclass(frozen=True)
class Target:
    who: str
    url: str
    pids: tuple[int, ...]
    """Every process of the target: their CPU is counted together."""
    ordered: bool = True
    """Whether each load-generator worker's events must reach the sink in the order it sent them."""
    inflight: int = 1
    """The gateway's deliveries in flight per source (its subscriber URL's ``inflight``)."""


# --- the processes ------------------------------------------------------------------------------


def _python() -> list[str]:
    profile = os.environ.get("BENCH_WEBHOOK_PROFILE", "")
    return [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "common.cli"]


def _standalone_cmd(config: Path, sink_url: str, loop: str) -> list[str]:
    delivery = ["--subscriber", sink_url, "--ops-port", "-1", "--loop", loop]
    return [*_python(), "run", "webhook", "--event-sources", str(config), *delivery]


def _pod_cmds(config: Path, sink_url: str, grpc_port: int, loop: str) -> tuple[list[str], list[str]]:
    """The gateway server and the client, as a pod's two containers run them."""
    server = [*_python(), "serve", "webhook", "--port", str(grpc_port), "--loop", loop]
    client = [sys.executable, "-m", "common.cli", "client", "--server", f"127.0.0.1:{grpc_port}"]
    client += ["--event-sources", str(config), "--name", "webhook-gateway", "--kind", "webhook"]
    client += ["--subscriber", sink_url, "--ops-port", "-1", "--loop", loop]
    return server, client


def _gateway(
    stack: contextlib.ExitStack, tmp: Path, config: Path, sink_url: str, port: int, loop: str
) -> tuple[int, ...]:
    """Start the gateway under test on event loop ``loop``; its processes' ids."""
    if MODE == "standalone":
        cmd = _standalone_cmd(config, sink_url, loop)
        return (stack.enter_context(process(cmd, port, tmp / f"gateway-{loop}.log")).pid,)
    grpc_port = free_port()
    server_cmd, client_cmd = _pod_cmds(config, sink_url, grpc_port, loop)
    server = stack.enter_context(process(server_cmd, grpc_port, tmp / f"gateway-{loop}-server.log"))
    client = stack.enter_context(process(client_cmd, port, tmp / f"gateway-{loop}-client.log"))
    return server.pid, client.pid


def _control(control: str, path: str, *, post: bool = False, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(f"{control}{path}", method="POST" if post else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read()) if not post else None


async def _until_ok(url: str, timeout: float = 30.0) -> int:
    """POST to ``url`` until one answers 200 (the gateway's route is up and its stream delivers);
    how many requests were answered 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        attempt = 0
        while time.monotonic() < deadline:
            headers = {"Content-Type": "application/json", "X-Request-Id": f"ready:{attempt}"}
            attempt += 1
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url, data=b"{}", headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        return 1
            await asyncio.sleep(0.02)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def _ready(url: str, control: str) -> None:
    """Wait until ``url`` delivers to the sink, then clear the sink."""
    delivered = asyncio.run(_until_ok(url))
    stats = _control(control, f"/stats?count={delivered}&timeout=10", timeout=20)
    if stats["events"] < delivered:
        raise TimeoutError(f"{url}: the readiness event did not reach the sink")
    _control(control, "/reset", post=True)


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """User plus system CPU seconds of processes ``pids`` so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _processes(tmp: Path, inflight: int = 1) -> Iterator[tuple[list[Target], str]]:
    """The sink, the gateway and the relay, running and ready; the targets and the sink's control URL."""
    sink_port, relay_port = free_port(), free_port()
    control = f"http://127.0.0.1:{sink_port}"
    sink_url = f"{control}/"
    with contextlib.ExitStack() as stack:
        stack.enter_context(server_process(["http-sink", str(sink_port)], sink_port, tmp / "sink.log"))
        gateway_sink = f"{sink_url}?inflight={inflight}" if inflight > 1 else sink_url
        targets = []
        for who, loop in zip(GATEWAYS, LOOPS, strict=True):
            port, config = free_port(), tmp / f"webhook-bench-{loop}.yaml"
            config.write_text(CONFIG.format(source=RELAY_SOURCE, endpoint=ENDPOINT, port=port))
            pids = _gateway(stack, tmp, config, gateway_sink, port, loop)
            targets.append(Target(who, f"http://127.0.0.1:{port}{ENDPOINT}", pids, inflight == 1, inflight))
        relay = stack.enter_context(
            server_process(["relay", str(relay_port), sink_url], relay_port, tmp / "relay.log")
        )
        targets.append(Target("relay", f"http://127.0.0.1:{relay_port}{ENDPOINT}", (relay.pid,)))
        for target in targets:
            _ready(target.url, control)
        yield targets, control


# --- one measured run ---------------------------------------------------------------------------


def _load(url: str, count: int, rate: float) -> dict[str, Any]:
    """Run the load generator process to the end; its outcome."""
    cmd = [sys.executable, "-m", "bench.servers", "load", url, str(count), str(CONCURRENCY), str(rate)]
    budget = 60 + (count / rate if rate else count / 100)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=budget, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the load generator failed (rc={done.returncode}): {done.stderr.decode()[-2000:]}"
        )
    outcome: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return outcome


def _measure(target: Target, control: str, count: int, rate: float, *, strict: bool) -> dict[str, Any]:
    """One run of the load generator against ``target``; the sink's stats with the load's outcome."""
    _control(control, "/reset", post=True)
    cpu = _cpu_seconds(target.pids)
    outcome = _load(target.url, count, rate)
    stats: dict[str, Any] = _control(control, f"/stats?count={outcome['ok']}&timeout=30", timeout=60)
    stats["target_cpu_s"] = _cpu_seconds(target.pids) - cpu
    stats["load"] = outcome
    stats["non_2xx"] = outcome["sent"] - outcome["ok"]
    _check(target, stats, count, strict=strict)
    return stats


def _check(target: Target, stats: dict[str, Any], count: int, *, strict: bool) -> None:
    who, load = target.who, stats["load"]
    if load["sent"] != count:
        raise AssertionError(f"{who}: the load generator sent {load['sent']} of {count}")
    if strict and stats["non_2xx"]:
        raise AssertionError(
            f"{who}: {stats['non_2xx']} requests not answered 2xx: {load['statuses']} {load['errors']}"
        )
    if stats["order_violations"] and target.ordered:
        raise AssertionError(f"{who}: {stats['order_violations']} order violations at the sink")
    if stats["unreadable"]:
        raise AssertionError(f"{who}: {stats['unreadable']} events without ce-subject/ce-id")
    expected = {RELAY_SOURCE: load["ok"]} if load["ok"] else {}
    if stats["events"] != load["ok"] or stats["per_source"] != expected:
        raise AssertionError(f"{who}: {load['ok']} requests answered 2xx, the sink got {stats['per_source']}")
    if len(stats["latencies"]) != stats["events"]:
        raise AssertionError(
            f"{who}: {len(stats['latencies'])} of {stats['events']} events carried a send time"
        )


def _rate(stats: dict[str, Any]) -> float:
    window = stats["last"] - stats["load"]["first_send"]
    return stats["events"] / window if window > 0 else float("inf")


def _order(i: int) -> tuple[str, ...]:
    """Round ``i``'s order: each target first in turn, so none always runs on a warmer machine."""
    shift = i % len(WHO)
    return WHO[shift:] + WHO[:shift]


# --- the benchmarks -----------------------------------------------------------------------------


def throughput(targets: list[Target], control: str, count: int, rounds: int) -> dict[str, Any]:
    by_who = {t.who: t for t in targets}
    rates: dict[str, list[float]] = {who: [] for who in WHO}
    cpu: dict[str, list[float]] = {who: [] for who in WHO}
    sink_share: dict[str, list[float]] = {who: [] for who in WHO}
    p99: dict[str, list[float]] = {who: [] for who in WHO}
    non_2xx, disorder = dict.fromkeys(WHO, 0), dict.fromkeys(WHO, 0)
    for i in range(rounds):
        for who in _order(i):
            stats = _measure(by_who[who], control, count, 0.0, strict=True)
            disorder[who] += stats["order_violations"]
            rates[who].append(_rate(stats))
            cpu[who].append(stats["target_cpu_s"] / count * 1e6)
            sink_share[who].append(stats["cpu_s"] / max(stats["last"] - stats["first"], 1e-9))
            p99[who].append(percentile(stats["latencies"], 99) * 1000)
            non_2xx[who] += stats["non_2xx"]
    gateway, relay = median(rates["gateway"]), median(rates["relay"])
    return {
        "benchmark": "webhook end to end throughput (POST -> gateway -> HTTP subscriber, unpaced)"
        + _delivery(by_who["gateway"]),
        "gateway_mode": MODE,
        "gateway_inflight": by_who["gateway"].inflight,
        "measured_at": MEASURED_AT,
        "events": count,
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "gateway_events_per_s": round(gateway),
        "relay_events_per_s": round(relay),
        "ratio": round(gateway / relay, 3),
        "target_ratio": TARGET_RATIO,
        "gateway_non_2xx": non_2xx["gateway"],
        "relay_non_2xx": non_2xx["relay"],
        "gateway_order_violations": disorder["gateway"],
        "relay_order_violations": disorder["relay"],
        "gateway_rounds_events_per_s": [round(r) for r in rates["gateway"]],
        "relay_rounds_events_per_s": [round(r) for r in rates["relay"]],
        "gateway_cpu_us_per_event": round(median(cpu["gateway"]), 1),
        "relay_cpu_us_per_event": round(median(cpu["relay"]), 1),
        "sink_cpu_share_gateway": round(median(sink_share["gateway"]), 2),
        "sink_cpu_share_relay": round(median(sink_share["relay"]), 2),
        "gateway_p99_ms_under_load": round(median(p99["gateway"]), 3),
        "relay_p99_ms_under_load": round(median(p99["relay"]), 3),
    } | {
        key: value
        for who in GATEWAYS[1:]
        for key, value in {
            f"{who}_events_per_s": round(median(rates[who])),
            f"{who}_ratio": round(median(rates[who]) / relay, 3),
            f"{who}_rounds_events_per_s": [round(r) for r in rates[who]],
            f"{who}_cpu_us_per_event": round(median(cpu[who]), 1),
            f"{who}_non_2xx": non_2xx[who],
            f"{who}_order_violations": disorder[who],
        }.items()
    }


def latency(targets: list[Target], control: str, rate: float, duration: float, rounds: int) -> dict[str, Any]:
    by_who = {t.who: t for t in targets}
    count = round(rate * duration)
    ms: dict[str, list[float]] = {who: [] for who in WHO}
    round_p99: dict[str, list[float]] = {who: [] for who in WHO}
    achieved: dict[str, list[float]] = {who: [] for who in WHO}
    non_2xx, disorder = dict.fromkeys(WHO, 0), dict.fromkeys(WHO, 0)
    for i in range(rounds):
        for who in _order(i):
            stats = _measure(by_who[who], control, count, rate, strict=False)
            disorder[who] += stats["order_violations"]
            samples = [lat * 1000 for lat in stats["latencies"]]
            ms[who] += samples
            round_p99[who].append(round(percentile(samples, 99), 3))
            achieved[who].append(_rate(stats))
            non_2xx[who] += stats["non_2xx"]
    p = {who: (percentile(v, 50), percentile(v, 99), max(v, default=0.0)) for who, v in ms.items()}
    return {
        "benchmark": f"webhook end to end latency at {rate:g} events/s (POST -> gateway -> HTTP subscriber)"
        + _delivery(by_who["gateway"]),
        "measured": "sink arrival time - X-Sent-At stamped by the load generator just before the POST; "
        "percentiles over the events of every round",
        "measured_at": MEASURED_AT,
        "gateway_mode": MODE,
        "gateway_inflight": by_who["gateway"].inflight,
        "rate_events_per_s": rate,
        "concurrency": CONCURRENCY,
        "duration_s": duration,
        "rounds": rounds,
        "events_per_round": count,
        "gateway_non_2xx": non_2xx["gateway"],
        "relay_non_2xx": non_2xx["relay"],
        "gateway_order_violations": disorder["gateway"],
        "relay_order_violations": disorder["relay"],
        "gateway_p50_ms": round(p["gateway"][0], 3),
        "gateway_p99_ms": round(p["gateway"][1], 3),
        "gateway_max_ms": round(p["gateway"][2], 3),
        "relay_p50_ms": round(p["relay"][0], 3),
        "relay_p99_ms": round(p["relay"][1], 3),
        "relay_max_ms": round(p["relay"][2], 3),
        "added_p50_ms": round(p["gateway"][0] - p["relay"][0], 3),
        "added_p99_ms": round(p["gateway"][1] - p["relay"][1], 3),
        "target_added_p99_ms": TARGET_ADDED_P99_MS,
        "gateway_rounds_p99_ms": round_p99["gateway"],
        "relay_rounds_p99_ms": round_p99["relay"],
        "gateway_rounds_events_per_s": [round(r) for r in achieved["gateway"]],
        "relay_rounds_events_per_s": [round(r) for r in achieved["relay"]],
    } | {
        key: value
        for who in GATEWAYS[1:]
        for key, value in {
            f"{who}_p50_ms": round(p[who][0], 3),
            f"{who}_p99_ms": round(p[who][1], 3),
            f"{who}_max_ms": round(p[who][2], 3),
            f"{who}_non_2xx": non_2xx[who],
            f"{who}_order_violations": disorder[who],
        }.items()
    }


def _delivery(gateway: Target) -> str:
    if gateway.inflight == 1:
        return ", delivered in order"
    return f", {gateway.inflight} deliveries in flight (order given up)"


def run(smoke: bool) -> list[dict[str, Any]]:
    """Each measurement twice: the gateway delivering in order (the default), and with as many
    deliveries in flight as the load generator has requests (``inflight=CONCURRENCY``)."""
    count = 300 if smoke else 20_000
    rounds = 1 if smoke else 3
    rate, duration = (100.0, 1.0) if smoke else (1_000.0, 5.0)
    results = []
    for inflight in (1, CONCURRENCY):
        with tempfile.TemporaryDirectory() as tmp, _processes(Path(tmp), inflight) as (targets, control):
            results += [
                throughput(targets, control, count, rounds),
                latency(targets, control, rate, duration, rounds),
            ]
    return results
