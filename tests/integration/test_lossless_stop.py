"""Nothing answered 2xx is lost on a clean stop, and a crash loses at most the unacknowledged bound.

Every test runs the gateway as real processes (``gateway serve webhook`` + ``gateway client``, or
``gateway run webhook``), eight webhook callers that remember which request ids were answered 2xx,
and a subscriber in its own process (``tests.harness.ledger_sink``) that writes down every event id
it receives. The two sets are compared after the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.ledger import Callers, arrived
from tests.harness.processes import free_port, showing_log_on_failure, spawn, terminate, wait_tcp, wait_until

pytestmark = pytest.mark.slow

SHUTDOWN_DROPS = re.compile(r"Delivery stopped: (\d+) event\(s\) dropped at shutdown")


@contextlib.asynccontextmanager
async def ledger_sink(
    tmp_path: Path, *args: str
) -> AsyncIterator[tuple[str, Path, asyncio.subprocess.Process]]:
    """A subscriber process writing every event id it receives to a ledger file."""
    port, ledger = free_port(), tmp_path / "ledger.txt"
    log = tmp_path / "sink.log"
    cmd = [sys.executable, "-m", "tests.harness.ledger_sink", str(port), str(ledger), *args]
    proc = await spawn(cmd, log)
    try:
        async with showing_log_on_failure(log, "sink"):
            await wait_tcp(port, proc)
            yield f"http://127.0.0.1:{port}/", ledger, proc
    finally:
        await terminate(proc)


def webhook_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(hook=f'endpoint: /hook\nmethod: POST\nport: "{port}"'))
    return config


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path,
    sink_url: str,
    *,
    pod: bool = True,
    client: tuple[str, ...] = (),
    server: tuple[str, ...] = (),
) -> AsyncIterator[tuple[Gateway, str]]:
    hook = free_port()
    gw = Gateway(
        tmp_path, webhook_config(tmp_path, hook), [sink_url], pod=pod, client_args=client, server_args=server
    )
    try:
        await gw.start(wait_port=hook)
        yield gw, f"http://127.0.0.1:{hook}/hook"
    except BaseException:
        gw.dump()
        raise
    finally:
        await gw.stop()


def lost(callers: Callers, ledger: Path) -> set[str]:
    return callers.answered - set(arrived(ledger, "hook"))


def assert_nothing_lost(callers: Callers, ledger: Path) -> None:
    missing = lost(callers, ledger)
    assert not missing, f"{len(missing)} of {len(callers.answered)} events answered 2xx never arrived"


def assert_stopped_with_503s_not_404s(
    callers: Callers, exited_at: float, gw: Gateway, until: float = float("inf")
) -> None:
    """While it stopped the webhook answered 503 with Retry-After; a refused connection only came once
    the process was gone (its ports close as it exits). Answers from ``until`` on (a new server) are
    not part of the stop."""
    assert callers.statuses["404"] == 0, (callers.statuses, [p.text() for p in gw.procs])
    assert set(callers.retry_after) <= {"5"}, callers.retry_after
    timeline = [(at, status) for at, status in callers.timeline if at < until]
    refused = [at for at, status in timeline if status == "refused"]
    answered = [at for at, status in timeline if status != "refused"]
    if refused:
        assert min(refused) >= max(answered) - 0.05, "a refusal before the last answer: the port closed early"
        assert min(refused) >= exited_at - 1.0, "connections were refused well before the process exited"


async def test_a_pod_stop_under_load_delivers_every_event_answered_2xx(tmp_path: Path) -> None:
    # A subscriber a little slower than the callers, so events are in flight everywhere at the stop.
    async with (
        ledger_sink(tmp_path, "--delay", "0.003") as (url, ledger, _),
        gateway(tmp_path, url) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(500)
        codes, exited_at = await gw.stop_pod()
    assert codes == [0, 0]
    assert_nothing_lost(callers, ledger)
    assert_stopped_with_503s_not_404s(callers, exited_at, gw)
    assert gw.client is not None and "dropped at shutdown" not in gw.client.text()


async def test_stopping_the_client_alone_delivers_every_event_answered_2xx_and_callers_get_503(
    tmp_path: Path,
) -> None:
    sink = ledger_sink(tmp_path, "--delay", "0.003")
    async with (
        sink as (url, ledger, _),
        gateway(tmp_path, url) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(500)
        assert gw.client is not None and gw.server is not None
        gw.client.signal(signal.SIGTERM)  # its container restarts; the server goes on
        code = await gw.client.exit_code()
        before = callers.statuses["503"]
        await asyncio.sleep(0.3)  # callers keep calling the server while no client reads it
        assert callers.statuses["503"] > before, "with no client the endpoint answers 503"
    assert code == 0
    assert_nothing_lost(callers, ledger)
    assert callers.statuses["404"] == 0 and callers.statuses["refused"] == 0, callers.statuses
    assert "drain the event source (shutdown)" in gw.server.text()


async def test_stopping_the_server_alone_delivers_every_event_answered_2xx_once_a_server_is_back(
    tmp_path: Path,
) -> None:
    sink = ledger_sink(tmp_path, "--delay", "0.003")
    async with (
        sink as (url, ledger, _),
        gateway(tmp_path, url) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(500)
        assert gw.server is not None and gw.client is not None
        gw.server.signal(signal.SIGTERM)  # its container restarts; the client goes on
        assert await gw.server.exit_code() == 0
        exited_at = time.monotonic()
        answered = set(callers.answered)
        await wait_until(
            lambda: answered <= set(arrived(ledger, "hook")), what="what the server answered for arrives"
        )
        restarted_at = time.monotonic()
        await gw.start_server("server2.log")  # the client restarts the source on the new server
        await callers.until_answered(len(answered) + 100)
        assert gw.client.proc is not None and gw.client.proc.returncode is None
    assert_nothing_lost(callers, ledger)
    assert_stopped_with_503s_not_404s(callers, exited_at, gw, until=restarted_at)


async def test_sigint_to_gateway_run_delivers_every_event_answered_2xx(tmp_path: Path) -> None:
    sink = ledger_sink(tmp_path, "--delay", "0.003")
    async with (
        sink as (url, ledger, _),
        gateway(tmp_path, url, pod=False) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(500)
        assert gw.client is not None
        gw.client.signal(signal.SIGINT)
        code = await gw.client.exit_code()
        exited_at = time.monotonic()
    assert code == 0
    assert_nothing_lost(callers, ledger)
    assert_stopped_with_503s_not_404s(callers, exited_at, gw)


async def test_a_slow_subscriber_whose_backlog_fits_the_grace_gets_every_event_answered_2xx(
    tmp_path: Path,
) -> None:
    bound = ("--max-unacked-events", "10", "--drain-grace", "4", "--grace", "6")
    async with (
        ledger_sink(tmp_path, "--delay", "0.2") as (url, ledger, _),
        gateway(tmp_path, url, client=bound, server=("--grace", "4")) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(15)
        codes, exited_at = await gw.stop_pod()
    assert codes == [0, 0]
    assert_nothing_lost(callers, ledger)
    assert_stopped_with_503s_not_404s(callers, exited_at, gw)
    assert callers.statuses["503"] > 0, "callers waiting for the window were told to retry"


async def test_with_a_grace_too_short_for_the_backlog_what_is_cut_off_is_exactly_what_is_missing(
    tmp_path: Path,
) -> None:
    bound = ("--max-unacked-events", "40", "--drain-grace", "1", "--grace", "1")
    async with (
        ledger_sink(tmp_path, "--delay", "0.2") as (url, ledger, _),
        gateway(tmp_path, url, client=bound) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(40)
        codes, _ = await gw.stop_pod()
    assert codes == [0, 0]
    assert gw.client is not None
    missing = lost(callers, ledger)
    found = SHUTDOWN_DROPS.search(gw.client.text())
    assert found is not None, gw.client.text()
    assert int(found.group(1)) == len(missing) > 0, (int(found.group(1)), len(missing))
    named = {
        event_id.removeprefix("hook:")
        for line in re.findall(r"\(shutdown: [^)]*\): (.*)", gw.client.text())
        for event_id in line.split(" and ")[0].split(", ")
    }
    assert named and named <= missing, "the drop log names the events it gave up on, and only those"


BOUND = 50


@pytest.mark.parametrize("killed", ["client", "server", "standalone"])
async def test_a_kill_9_with_a_stalled_subscriber_loses_at_most_the_unacknowledged_bound(
    tmp_path: Path, killed: str
) -> None:
    pod = killed != "standalone"
    bound = ("--max-unacked-events", str(BOUND))
    async with (
        ledger_sink(tmp_path, "--stall") as (url, ledger, sink),
        gateway(tmp_path, url, pod=pod, client=bound) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(BOUND)
        await asyncio.sleep(0.5)  # time for answers the bound should hold back; none may come
        assert len(callers.answered) == BOUND, "callers wait once the window is full"
        victim = gw.server if killed == "server" else gw.client
        assert victim is not None
        victim.signal(signal.SIGKILL)
        assert await victim.exit_code() == -signal.SIGKILL
        sink.send_signal(signal.SIGUSR1)  # the subscriber comes back
        if killed == "server":  # the client delivers what it holds
            await wait_until(
                lambda: len(set(arrived(ledger, "hook"))) >= BOUND, what="the client's events delivered"
            )
    missing = lost(callers, ledger)
    print(f"kill -9 of the {killed}: {len(missing)} of {len(callers.answered)} answered events lost")
    assert len(missing) <= BOUND
    assert callers.statuses["404"] == 0, callers.statuses
    if killed == "server":
        assert not missing, "the client had read every event the server answered for"


async def test_a_second_sigint_while_draining_forces_exit_1_and_says_what_it_abandons(tmp_path: Path) -> None:
    bound = ("--max-unacked-events", "20")
    async with (
        ledger_sink(tmp_path, "--stall") as (url, _, _),
        gateway(tmp_path, url, pod=False, client=bound) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(20)
        run = gw.client
        assert run is not None
        run.signal(signal.SIGINT)
        await wait_until(lambda: "draining the event sources" in run.text(), what="the drain began")
        run.signal(signal.SIGINT)
        code = await run.exit_code(timeout=5.0)
    assert code == 1, "exit 1, not a crash (139 was a segmentation fault)"
    forced = re.search(r"Second SIGINT: forcing exit; abandoning (.*)\.", run.text())
    assert forced is not None, run.text()
    assert "20 event(s) read off the streams and not yet accepted by every subscriber" in forced.group(1)
