"""JetStream through a real pod (``gateway serve nats`` + ``gateway client``) under faults, with a
ledger: every message the stream stores is counted, and every id a subscriber process reads.

A publisher writes to a real nats-server's JetStream stream throughout; then the client is killed
with ``kill -9`` and started again, then the server, then the subscriber is down for 30 s (the
client's memory staying within its bound meanwhile). Every stored message must reach the subscriber
at least once; a message can arrive twice after a crash (it was delivered, its acknowledgement had
not reached JetStream), and such repeats are counted and at most the unacknowledged bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.ledger import NOTICE_RETURN, arrived
from tests.harness.nats import nats_server
from tests.harness.processes import free_port, showing_log_on_failure, spawn, terminate, wait_tcp, wait_until

pytestmark = pytest.mark.slow

BOUND = 200
OUTAGE = 30.0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def _publishing(url: str, stored: list[int]) -> AsyncIterator[None]:
    """Publish to ``orders.>`` every few milliseconds until the block ends; ``stored`` gets each
    message's stream sequence once JetStream has stored it."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="ORDERS", subjects=["orders.>"])
    stop = asyncio.Event()

    async def publish() -> None:
        n = 0
        while not stop.is_set():
            ack = await js.publish(f"orders.n{n}", f"order {n}".encode(), headers={"Nats-Msg-Id": f"m-{n}"})
            stored.append(ack.seq)
            n += 1
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(publish())
    try:
        yield
    finally:
        stop.set()
        await task
        await nc.close()


async def _sink(port: int, ledger: Path, log: Path) -> asyncio.subprocess.Process:
    proc = await spawn([sys.executable, "-m", "tests.harness.ledger_sink", str(port), str(ledger)], log)
    await wait_tcp(port, proc)
    return proc


@pytest.mark.timeout(300)
async def test_jetstream_survives_kill_9_of_each_process_and_a_subscriber_outage_losing_nothing(
    tmp_path: Path,
) -> None:
    sink_port, ledger, sink_log = free_port(), tmp_path / "ledger.txt", tmp_path / "sink.log"
    stored: list[int] = []
    async with nats_server(jetstream=True) as broker, showing_log_on_failure(sink_log, "sink"):
        config = tmp_path / "cm.yaml"
        source = f"url: {broker.url}\nsubject: orders.>\njetStream:\n  stream: ORDERS\n  durable: ledger"
        config.write_text(configmap(orders=source))
        bound = ("--max-unacked-events", str(BOUND), *NOTICE_RETURN)
        gw = Gateway(tmp_path, config, [f"http://127.0.0.1:{sink_port}/"], kind="nats", client_args=bound)
        sink = await _sink(sink_port, ledger, sink_log)

        def got() -> set[int]:
            return {int(i.rsplit(":", 1)[1]) for i in arrived(ledger, "orders")}

        try:
            async with _publishing(broker.url, stored):
                await gw.start()
                await wait_until(lambda: len(got()) >= 300, what="300 delivered", timeout=30)
                for victim in ("client", "server"):
                    proc = gw.client if victim == "client" else gw.server
                    assert proc is not None
                    proc.signal(signal.SIGKILL)
                    assert await proc.exit_code() == -signal.SIGKILL
                    if victim == "client":
                        await gw.start_client("client-2.log")
                    else:
                        await gw.start_server("server-2.log")
                    await gw.ready()
                    wanted = len(got()) + 200
                    await wait_until(
                        lambda: len(got()) >= wanted,  # noqa: B023 - awaited within the iteration
                        what=f"delivery after {victim}",
                        timeout=60,
                    )
                assert gw.client is not None and gw.client.proc is not None
                rss_before = _rss_kib(gw.client.proc.pid)
                await terminate(sink)
                await asyncio.sleep(OUTAGE)  # the outage itself: publishing goes on meanwhile
                rss_during = _rss_kib(gw.client.proc.pid)
                sink = await _sink(sink_port, ledger, sink_log)
            await wait_until(lambda: set(stored) <= got(), what="every stored message delivered", timeout=120)
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
            await terminate(sink)
    counts = Counter(int(i.rsplit(":", 1)[1]) for i in arrived(ledger, "orders"))
    repeats = sum(n - 1 for n in counts.values())
    rss = f"RSS {rss_before}->{rss_during} KiB"
    print(f"{len(stored)} stored, {len(counts)} delivered, {repeats} repeats, {rss}")
    assert set(stored) <= set(counts)
    assert repeats <= 2 * BOUND, "each crash repeats at most what was unacknowledged"
    assert rss_during - rss_before < 64 * 1024, (
        "the client holds at most the bound while the subscriber is down"
    )
