"""The one retry helper and the v0.11 backoff object."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

import pytest

from common.errors import ConfigError, RetriesExhausted
from common.retry import Backoff, retry, sleep


def test_delays_grow_by_the_factor_up_to_the_cap() -> None:
    delays = list(itertools.islice(Backoff(duration=1, factor=2, jitter=0, cap=5).delays(), 6))
    assert delays == [1, 2, 4, 5, 5, 5]


def test_steps_count_attempts_so_there_is_one_delay_fewer() -> None:
    assert list(Backoff(duration=0.1, factor=1, jitter=0, steps=3).delays()) == [0.1, 0.1]


def test_zero_steps_means_retry_forever() -> None:
    assert len(list(itertools.islice(Backoff(steps=0).delays(), 1000))) == 1000


def test_jitter_adds_at_most_its_fraction() -> None:
    delays = list(itertools.islice(Backoff(duration=1, factor=1, jitter=0.5).delays(random.Random(7)), 200))
    assert all(1 <= d <= 1.5 for d in delays)
    assert len(set(delays)) > 100


def test_the_v0_11_backoff_object_reads_nanoseconds_and_duration_strings() -> None:
    assert Backoff.from_config(
        {"duration": 10_000_000_000, "factor": 2, "jitter": 0.2, "steps": 5}
    ) == Backoff(duration=10.0, factor=2.0, jitter=0.2, steps=5)
    assert Backoff.from_config({"duration": "1m30s"}).duration == 90.0


def test_a_missing_backoff_retries_forever_instead_of_panicking() -> None:
    backoff = Backoff.from_config(None)
    assert backoff.steps == 0
    assert backoff.cap == 60.0


def test_a_bad_backoff_names_every_bad_field() -> None:
    with pytest.raises(ConfigError) as err:
        Backoff.from_config({"duration": "ten", "factor": 0.5, "steps": -1, "jitterr": 1})
    assert set(err.value.problems) == {
        "backoff.duration",
        "backoff.factor",
        "backoff.steps",
        "backoff.jitterr",
    }


async def test_retry_returns_the_first_success_and_logs_numbered_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"refused #{calls}")
        return "connected"

    with caplog.at_level(logging.WARNING):
        result = await retry(
            flaky, what="connect to broker", backoff=Backoff(duration=0.001, jitter=0, steps=5)
        )
    assert result == "connected"
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("connect to broker: attempt #1/5 failed; will retry in 0.00s")
    assert lines[1].startswith("connect to broker: attempt #2/5 failed")
    assert len(lines) == 2


async def test_retry_gives_up_keeping_the_real_error() -> None:
    async def down() -> None:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(RetriesExhausted) as err:
        await retry(down, what="connect", backoff=Backoff(duration=0.001, jitter=0, steps=3))
    assert err.value.attempts == 3
    assert isinstance(err.value.__cause__, ConnectionRefusedError)
    assert "nobody home" in str(err.value)


async def test_errors_outside_retry_on_propagate_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("config")

    with pytest.raises(KeyError):
        await retry(broken, what="x", backoff=Backoff(duration=0.001), retry_on=(ConnectionError,))
    assert calls == 1


async def test_a_server_hint_lengthens_the_delay_within_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def throttled() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("429")

    with caplog.at_level(logging.WARNING):
        await retry(
            throttled, what="post", backoff=Backoff(duration=0.001, jitter=0, cap=0.05), hint=lambda exc: 10.0
        )
    assert "will retry in 0.05s" in caplog.records[0].getMessage()


async def test_a_wakeup_ends_the_sleep_early() -> None:
    wake = asyncio.Event()
    wake.set()
    async with asyncio.timeout(1):
        assert await sleep(30, wake) is True
    assert await sleep(0.001, asyncio.Event()) is False
