"""``answer: delivered`` over real processes: a webhook caller is answered 2xx only once every
subscriber accepted its event, so no crash anywhere can lose an event a caller was told was taken.
A ledger subscriber in its own process records every id it reads before it answers."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.ledger import Callers, arrived
from tests.harness.processes import free_port, wait_until
from tests.integration.test_lossless_stop import ledger_sink

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, port: int, *extra: str) -> Path:
    config = tmp_path / "cm.yaml"
    lines = ["endpoint: /hook", "method: POST", f'port: "{port}"', "answer: delivered", *extra]
    config.write_text(configmap(hook="\n".join(lines)))
    return config


@pytest.mark.parametrize("killed", ["client", "server"])
async def test_a_kill_9_mid_stream_loses_no_request_answered_2xx(tmp_path: Path, killed: str) -> None:
    hook = free_port()
    async with ledger_sink(tmp_path, "--delay", "0.005") as (url, ledger, _):
        gw = Gateway(tmp_path, _config(tmp_path, hook, "answerTimeout: 5s"), [url])
        try:
            await gw.start(wait_port=hook)
            async with Callers(f"http://127.0.0.1:{hook}/hook", count=8) as callers:
                await callers.until_answered(200)
                victim = gw.server if killed == "server" else gw.client
                assert victim is not None
                victim.signal(signal.SIGKILL)
                assert await victim.exit_code() == -signal.SIGKILL
                await callers.stop()
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
    missing = callers.answered - set(arrived(ledger, "hook"))
    assert len(callers.answered) >= 200
    assert not missing, f"{len(missing)} of {len(callers.answered)} answered 2xx never reached the subscriber"


async def test_a_stalled_subscriber_gets_the_caller_a_503_with_retry_after_not_a_200(tmp_path: Path) -> None:
    hook = free_port()
    async with ledger_sink(tmp_path, "--stall") as (url, ledger, sink):
        gw = Gateway(tmp_path, _config(tmp_path, hook, "answerTimeout: 1s"), [url])
        try:
            await gw.start(wait_port=hook)
            async with Callers(f"http://127.0.0.1:{hook}/hook", count=2) as callers:
                await wait_until(lambda: callers.statuses["503"] >= 2, what="503s while nobody accepts")
                assert callers.statuses["200"] == 0 and not callers.answered
                sink.send_signal(signal.SIGUSR1)  # the subscriber answers again
                await callers.until_answered(10)
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
    assert callers.answered <= set(arrived(ledger, "hook"))
