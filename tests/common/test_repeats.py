"""A chatty library's repeated log lines: each let through once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from common import logs


def test_a_repeated_message_is_let_through_once_per_interval_with_how_many_were_held_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("common.logs.time.monotonic", lambda: clock[0])
    library = logging.getLogger("chatty")
    child = logging.getLogger("chatty.conn")
    logs.quiet_repeats("chatty", interval=60.0)
    caplog.set_level(logging.INFO)
    for _ in range(5):
        child.error("Unable connect to node with id %s", 1)
    library.warning("another message")
    clock[0] += 61
    child.error("Unable connect to node with id %s", 2)
    shown = [r.getMessage() for r in caplog.records]
    assert shown == [
        "Unable connect to node with id 1",
        "another message",
        "Unable connect to node with id 2 (4 more like it in the last 61s)",
    ]


def test_installing_twice_adds_one_filter() -> None:
    logging.getLogger("twice.inner")
    logs.quiet_repeats("twice")
    logs.quiet_repeats("twice")
    assert sum(isinstance(f, logs.Repeats) for f in logging.getLogger("twice.inner").filters) == 1
