"""A Kafka consumer group through a real pod (``gateway serve kafka`` + ``gateway client``) under
faults, with a ledger: every record the broker stored is known by its ``topic/partition/offset`` (the
producer's ``RecordMetadata``, which is the event id), and every id a subscriber process reads.

A producer writes to a 3-partition topic of a real Tansu throughout; then the client is killed with
``kill -9`` and started again, then the server, then the subscriber is down for 30 s (the client's
memory staying within its bound meanwhile). Every stored record must reach the subscriber at least
once, and in offset order per partition as first seen. A record can arrive twice after a crash (it
was delivered, its offset not yet committed); Kafka has no redelivered flag, so the ledger counts
such repeats by id, and they are at most the unacknowledged bound per crash.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.harness.brokers import tansu
from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.kafka import Producing, create_topic, first_arrivals, group_source, ids
from tests.harness.ledger import NOTICE_RETURN
from tests.harness.processes import free_port, showing_log_on_failure, spawn, terminate, wait_tcp, wait_until

pytestmark = pytest.mark.slow

BOUND = 200
OUTAGE = 30.0
PARTITIONS = 3
TOPIC = "orders"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _sink(port: int, ledger: Path, log: Path) -> asyncio.subprocess.Process:
    proc = await spawn([sys.executable, "-m", "tests.harness.ledger_sink", str(port), str(ledger)], log)
    await wait_tcp(port, proc)
    return proc


@pytest.mark.timeout(300)
async def test_a_consumer_group_survives_kill_9_of_each_process_and_a_subscriber_outage_losing_nothing(
    tmp_path: Path,
) -> None:
    sink_port, ledger, sink_log = free_port(), tmp_path / "ledger.txt", tmp_path / "sink.log"
    async with tansu() as broker, showing_log_on_failure(sink_log, "sink"):
        await create_topic(broker.url, TOPIC, PARTITIONS)
        config = tmp_path / "cm.yaml"
        config.write_text(configmap(orders=group_source(broker.url, TOPIC, "ledger")))
        bound = ("--max-unacked-events", str(BOUND), *NOTICE_RETURN)
        gw = Gateway(tmp_path, config, [f"http://127.0.0.1:{sink_port}/"], kind="kafka", client_args=bound)
        sink = await _sink(sink_port, ledger, sink_log)

        def got() -> set[str]:
            return set(ids(ledger, TOPIC))

        try:
            async with Producing(broker.url, TOPIC, PARTITIONS) as producing:
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
                await asyncio.sleep(OUTAGE)  # the outage itself: producing goes on meanwhile
                rss_during = _rss_kib(gw.client.proc.pid)
                sink = await _sink(sink_port, ledger, sink_log)
            stored = producing.stored
            await wait_until(lambda: set(stored) <= got(), what="every stored record delivered", timeout=120)
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
            await terminate(sink)
    received = ids(ledger, TOPIC)
    counts = Counter(received)
    repeats = sum(n - 1 for n in counts.values())
    rss = f"RSS {rss_before}->{rss_during} KiB"
    print(f"{len(stored)} stored, {len(counts)} delivered, {repeats} repeats, {rss}")
    assert set(stored) <= set(counts)
    assert set(counts) <= set(stored), "nothing arrives that the broker did not store"
    for partition, offsets in first_arrivals(received).items():
        assert offsets == sorted(offsets), f"partition {partition}: first arrivals out of offset order"
        assert offsets == list(range(len(offsets))), f"partition {partition}: an offset never arrived"
    assert len(first_arrivals(received)) == PARTITIONS
    assert repeats <= 2 * BOUND, "each crash repeats at most what was unacknowledged"
    assert rss_during - rss_before < 64 * 1024, (
        "the client holds at most the bound while the subscriber is down"
    )
