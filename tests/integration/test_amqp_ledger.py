"""A durable AMQP queue through a real pod (``gateway serve amqp`` + ``gateway client``) under faults,
with a ledger: every message the broker confirmed is known by its ``message_id`` (the event id is
``<source>:<message_id>``), and every id the subscriber reads, with its ``redelivered`` extension.

A publisher (publisher confirms, persistent messages) writes to a topic exchange of a real RabbitMQ
throughout, a burst first so that a backlog waits in the queue; then the client is killed with
``kill -9`` and started again, then the server, then the subscriber is down for 30 s (the client's
memory staying within its bound meanwhile). Every confirmed message must reach the subscriber at least
once. Each crash leaves the channel's unacknowledged messages (at most the prefetch, the client's
window) to the broker, which delivers them again flagged ``redelivered``: such repeats are counted, a
message arrives unflagged at most once, and the repeats are at most the unacknowledged bound per crash.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.harness.amqp import Publishing, channel, declare, durable_source
from tests.harness.brokers import shared_rabbitmq
from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.http_sink import RestartingSink
from tests.harness.ledger import NOTICE_RETURN, full_window
from tests.harness.processes import free_port, wait_until

pytestmark = pytest.mark.slow

BOUND = 200
OUTAGE = 30.0
BURST = 3000
"""Messages published at once before the steady stream: a backlog, so each crash finds a full window."""
EXCHANGE, QUEUE, SOURCE = "ledger-orders", "ledger-orders", "orders"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Ledger(RestartingSink):
    """What the subscriber received across its restarts: ``(message id, redelivered)`` per arrival."""

    def arrivals(self) -> list[tuple[str, bool]]:
        prefix = f"{SOURCE}:"
        return [
            (r.headers["ce-id"].removeprefix(prefix), r.headers.get("ce-redelivered") == "true")
            for r in self.received()
            if r.headers.get("ce-subject") == SOURCE
        ]

    def ids(self) -> set[str]:
        return {message_id for message_id, _ in self.arrivals()}


@pytest.mark.timeout(300)
async def test_a_durable_queue_survives_kill_9_of_each_process_and_a_subscriber_outage_losing_nothing(
    tmp_path: Path,
) -> None:
    ledger = Ledger(free_port())
    async with shared_rabbitmq() as broker, channel(broker.url) as chan:
        exchange = await declare(chan, EXCHANGE, QUEUE, "orders.#")
        config = tmp_path / "cm.yaml"
        config.write_text(configmap(**{SOURCE: durable_source(broker.url, EXCHANGE, QUEUE, "orders.#")}))
        bound = ("--max-unacked-events", str(BOUND), *NOTICE_RETURN)
        gw = Gateway(tmp_path, config, [f"http://127.0.0.1:{ledger.port}/"], kind="amqp", client_args=bound)
        await ledger.start()
        redelivered_at_crash: list[int] = []
        try:
            async with Publishing(exchange, "orders.new", burst=BURST) as publishing:
                await publishing.until_confirmed(BURST // 2)
                held = broker.connections()  # the publisher's
                await gw.start()
                await wait_until(lambda: len(ledger.ids()) >= 300, what="300 delivered", timeout=30)
                for victim in ("client", "server"):
                    proc = gw.client if victim == "client" else gw.server
                    assert proc is not None
                    backlog = await full_window(
                        ledger,
                        lambda: len(publishing.confirmed) - len(ledger.ids()),
                        BOUND,
                        victim,
                    )
                    print(f"backlog at the {victim}'s kill: {backlog}")
                    assert backlog > BOUND, f"a full window is unacknowledged when the {victim} dies"
                    proc.signal(signal.SIGKILL)
                    assert await proc.exit_code() == -signal.SIGKILL
                    await wait_until(
                        lambda: broker.connections() == held,
                        what=f"the source's connection closed with the {victim}: unacked ones requeued",
                    )
                    if victim == "client":
                        await gw.start_client("client-2.log")
                    else:
                        await gw.start_server("server-2.log")
                    await gw.ready()
                    wanted = len(ledger.ids()) + 200
                    await wait_until(
                        lambda: len(ledger.ids()) >= wanted,  # noqa: B023 - awaited within the iteration
                        what=f"delivery after {victim}",
                        timeout=60,
                    )
                    redelivered_at_crash.append(sum(flag for _, flag in ledger.arrivals()))
                assert gw.client is not None and gw.client.proc is not None
                rss_before = _rss_kib(gw.client.proc.pid)
                await ledger.stop()
                await asyncio.sleep(OUTAGE)  # the outage itself: publishing goes on meanwhile
                rss_during = _rss_kib(gw.client.proc.pid)
                await ledger.start()
            confirmed = publishing.confirmed
            await wait_until(
                lambda: set(confirmed) <= ledger.ids(), what="every confirmed message delivered", timeout=120
            )
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
            await ledger.stop()
            await chan.queue_delete(QUEUE)
    arrivals = ledger.arrivals()
    counts = Counter(message_id for message_id, _ in arrivals)
    unflagged = Counter(message_id for message_id, flag in arrivals if not flag)
    repeats = sum(n - 1 for n in counts.values())
    flagged = sum(flag for _, flag in arrivals)
    rss = f"RSS {rss_before}->{rss_during} KiB"
    print(
        f"{len(confirmed)} confirmed, {len(counts)} delivered, {repeats} repeats, "
        f"{flagged} redelivered (after each crash: {redelivered_at_crash}), {rss}"
    )
    assert set(confirmed) <= set(counts)
    assert set(counts) <= set(confirmed), "nothing arrives that the broker did not confirm"
    assert redelivered_at_crash[0] > 0, "the client's crash left messages to redeliver, flagged"
    assert redelivered_at_crash[1] > redelivered_at_crash[0], "so did the server's"
    assert [i for i, n in unflagged.items() if n > 1] == [], "a repeat not flagged redelivered"
    assert repeats <= 2 * BOUND, "each crash repeats at most what was unacknowledged"
    assert flagged <= 2 * BOUND, "each crash leaves at most the prefetch to be delivered again"
    assert rss_during - rss_before < 64 * 1024, (
        "the client holds at most the bound while the subscriber is down"
    )
