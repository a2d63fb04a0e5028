"""Whether a subscriber is reachable, told at once and kept true: status, log and metrics, against
real servers and real closed ports."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from tests.client.delivery_rig import FAST, Arrival, message, sample, serving, subscriber
from tests.harness.processes import free_port, wait_until


@pytest.mark.parametrize("scheme", ["http", "nats"])
async def test_a_subscriber_down_at_start_says_why_at_once_in_the_log_and_status(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    url = f"{scheme}://127.0.0.1:{free_port()}/events"
    async with subscriber(url, FAST) as sub:
        await wait_until(
            lambda: sub.status()["last_error"] is not None, what="the reason in status", timeout=5
        )
        status = sub.status()
        assert status["up"] is False
        assert (
            "refused" in str(status["last_error"]).lower()
            or "connect call failed" in str(status["last_error"]).lower()
        )
        assert sample("gateway_subscriber_up", subscriber=sub.display) == 0
        assert any(sub.display in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


async def test_up_and_the_last_success_follow_what_the_subscriber_answers() -> None:
    async with serving() as sink, subscriber(sink.url, FAST, grace=0.2) as sub:
        await sub.put(message("src", 0))
        await sink.wait_for(1)
        await wait_until(lambda: sub.status()["delivered"] == 1, what="the first delivery")
        assert sample("gateway_subscriber_up", subscriber=sub.display) == 1
        first = sample("gateway_subscriber_last_success_timestamp_seconds", subscriber=sub.display)
        assert first > 0 and sub.status()["last_success"] is not None

        async def unavailable(arrival: Arrival) -> web.Response:
            return web.Response(status=503)

        sink.respond = unavailable
        await sub.put(message("src", 1))
        await wait_until(lambda: not sub.status()["up"], what="down while a delivery is retried")
        assert sample("gateway_subscriber_up", subscriber=sub.display) == 0
        assert sample("gateway_subscriber_last_success_timestamp_seconds", subscriber=sub.display) == first

        async def ok(arrival: Arrival) -> web.Response:
            return web.Response(status=200)

        sink.respond = ok
        await wait_until(lambda: sub.status()["delivered"] == 2, what="the retry delivered")
        assert sub.status()["up"] is True
        assert sample("gateway_subscriber_last_success_timestamp_seconds", subscriber=sub.display) >= first
