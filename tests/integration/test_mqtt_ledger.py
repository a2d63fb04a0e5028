"""MQTT through a real pod (``gateway serve mqtt`` + ``gateway client``) under faults, with a ledger:
every message the broker confirmed (its PUBACK to the publisher) is known by its unique payload
``m-<n>``, and every arrival at the subscriber is recorded with its ``dup`` extension.

QoS 1 with a persistent session under MQTT 5 (so the client's window, ``--max-unacked-events``, is
the connection's Receive Maximum). A publisher writes to a real mosquitto throughout, a burst first
so that a backlog waits in the broker; then the client is killed with ``kill -9`` and started
again, then the server, then the subscriber is down for 30 s (the client's memory staying within its
bound meanwhile). Every confirmed message must reach the subscriber at least once,
first arrivals in publish order. Each crash leaves at most the window unacknowledged, which the
broker sends again flagged ``dup``: repeats are counted, a message arrives unflagged at most once,
and the repeats are at most the bound per crash. mosquitto here queues without limit (see
``UnboundedMosquitto``): its default of 1,000 queued messages per client would drop messages during
the outage, PUBACKed all the same.

The ``dup`` flags themselves are not bounded here: mosquitto 2.0.11 stops honouring the Receive
Maximum on a resumed session once the messages it sent again are acknowledged, and sends the whole
backlog, which the server holds; after the server's crash all of it comes again flagged ``dup``, most
of it never delivered before (so not a repeat).

QoS 0 (the default), at most once: a ``kill -9`` of the client loses what it held and what was
published until the source subscribed again, and nothing else; nothing arrives twice.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.kafka import phase_is
from tests.harness.ledger import NOTICE_RETURN, full_window
from tests.harness.mqtt import Ledger, Publishing, number, source, unbounded_mosquitto
from tests.harness.processes import free_port, wait_until

pytestmark = pytest.mark.slow

BOUND = 200
OUTAGE = 30.0
BURST = 5000
"""Messages published at once before the steady stream: a backlog, so each crash finds a full window."""
SOURCE, TOPIC = "orders", "orders/new"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _running(gateway: Gateway) -> None:
    """Until the client's status shows the source subscribed (its session exists from then on)."""
    await wait_until(lambda: phase_is(gateway, SOURCE, "Running"), what="the source Running", timeout=30)


@pytest.mark.timeout(300)
async def test_qos_1_with_a_persistent_session_survives_kill_9_of_each_process_and_a_subscriber_outage(
    tmp_path: Path,
) -> None:
    ledger = Ledger(free_port(), SOURCE)
    async with unbounded_mosquitto() as broker:
        config = tmp_path / "cm.yaml"
        lines = ("qos: 1", "protocol: '5'", "persistentSession: true")
        config.write_text(configmap(**{SOURCE: source(broker.url, "orders/#", "ledger-orders", *lines)}))
        bound = ("--max-unacked-events", str(BOUND), *NOTICE_RETURN)
        gw = Gateway(tmp_path, config, [ledger.url], kind="mqtt", client_args=bound)
        await ledger.start()
        dup_after_crash: list[int] = []
        try:
            await gw.start()
            await _running(gw)
            async with Publishing(broker.port, TOPIC, burst=BURST) as publishing:
                await wait_until(lambda: len(ledger.payloads()) >= 300, what="300 delivered", timeout=30)
                for victim in ("client", "server"):
                    proc = gw.client if victim == "client" else gw.server
                    assert proc is not None
                    backlog = await full_window(
                        ledger,
                        lambda: len(publishing.confirmed) - len(ledger.payloads()),
                        BOUND,
                        victim,
                    )
                    print(f"backlog at the {victim}'s kill: {backlog}")
                    assert backlog > BOUND, f"a full window is unacknowledged when the {victim} dies"
                    proc.signal(signal.SIGKILL)
                    assert await proc.exit_code() == -signal.SIGKILL
                    if victim == "client":
                        await gw.start_client("client-2.log")
                    else:
                        await gw.start_server("server-2.log")
                    await gw.ready()
                    wanted = len(ledger.payloads()) + 200
                    await wait_until(
                        lambda: len(ledger.payloads()) >= wanted,  # noqa: B023 - awaited within the iteration
                        what=f"delivery after the {victim}'s kill",
                        timeout=60,
                    )
                    dup_after_crash.append(sum(dup for _, dup in ledger.arrivals()))
                assert gw.client is not None and gw.client.proc is not None
                rss_before = _rss_kib(gw.client.proc.pid)
                await ledger.stop()
                await asyncio.sleep(OUTAGE)  # the outage itself: publishing goes on meanwhile
                rss_during = _rss_kib(gw.client.proc.pid)
                await ledger.start()
            confirmed = publishing.confirmed
            await wait_until(
                lambda: set(confirmed) <= ledger.payloads(),
                what="every confirmed message delivered",
                timeout=120,
            )
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
            await ledger.stop()
    arrivals = ledger.arrivals()
    counts = ledger.counts()
    repeats = sum(n - 1 for n in counts.values())
    flagged = sum(dup for _, dup in arrivals)
    rss = f"RSS {rss_before}->{rss_during} KiB"
    print(
        f"{len(confirmed)} confirmed, {len(counts)} delivered, {repeats} repeats, "
        f"{flagged} flagged dup (after each crash: {dup_after_crash}), {rss}"
    )
    assert set(confirmed) <= set(counts), "every confirmed message arrives"
    assert dup_after_crash[0] > 0, "the client's crash left messages to send again, flagged dup"
    assert dup_after_crash[1] > dup_after_crash[0], "so did the server's"
    assert set(counts) <= set(confirmed), "nothing arrives that the broker did not confirm"
    firsts = ledger.first_arrivals()
    assert firsts == sorted(firsts), "first arrivals in the order the messages were published"
    unflagged = Counter(payload for payload, dup in arrivals if not dup)
    assert [p for p, n in unflagged.items() if n > 1] == [], "a repeat not flagged dup"
    assert repeats <= 2 * BOUND, "each crash repeats at most what was unacknowledged (the window)"
    assert rss_during - rss_before < 64 * 1024, (
        "the client holds at most the bound while the subscriber is down"
    )


@pytest.mark.timeout(120)
async def test_qos_0_loses_only_around_a_kill_9_of_the_client_and_delivers_nothing_twice(
    tmp_path: Path,
) -> None:
    ledger = Ledger(free_port(), SOURCE)
    async with unbounded_mosquitto() as broker:
        config = tmp_path / "cm.yaml"
        config.write_text(configmap(**{SOURCE: source(broker.url, "orders/#", "ledger-plain")}))
        bound = ("--max-unacked-events", str(BOUND), *NOTICE_RETURN)
        gw = Gateway(tmp_path, config, [ledger.url], kind="mqtt", client_args=bound)
        await ledger.start()
        try:
            await gw.start()
            await _running(gw)
            async with Publishing(broker.port, TOPIC) as publishing:
                await wait_until(lambda: len(ledger.payloads()) >= 300, what="300 delivered", timeout=30)
                assert gw.client is not None
                killed_at = len(publishing.confirmed)
                gw.client.signal(signal.SIGKILL)
                assert await gw.client.exit_code() == -signal.SIGKILL
                await gw.start_client("client-2.log")
                await gw.ready()
                await _running(gw)
                resumed_at = len(publishing.confirmed)
                wanted = len(ledger.payloads()) + 200
                await wait_until(lambda: len(ledger.payloads()) >= wanted, what="delivery after the kill")
            confirmed = publishing.confirmed
            after = set(confirmed[resumed_at:])
            await wait_until(
                lambda: after <= ledger.payloads(), what="every message after the resubscription", timeout=60
            )
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
            await ledger.stop()
    counts = ledger.counts()
    lost = sorted(number(p) for p in set(confirmed) - set(counts))
    print(f"{len(confirmed)} confirmed, {len(counts)} delivered, {len(lost)} lost: {lost[:3]}...{lost[-3:]}")
    print(f"killed after {killed_at} confirmed, subscribed again after {resumed_at}")
    assert [p for p, n in counts.items() if n > 1] == [], "QoS 0 delivers nothing twice"
    assert set(counts) <= set(confirmed), "nothing arrives that the broker did not confirm"
    assert [p for p, dup in ledger.arrivals() if dup] == [], "nothing is flagged dup at QoS 0"
    outside = [n for n in lost if not killed_at - BOUND <= n < resumed_at]
    assert outside == [], "a message lost away from the kill (held by the client, or published unsubscribed)"
    firsts = ledger.first_arrivals()
    assert firsts == sorted(firsts), "what arrives arrives in publish order"
