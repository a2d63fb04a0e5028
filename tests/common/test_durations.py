"""Go-style durations as v0.11 configs write them."""

from __future__ import annotations

import pytest

from common.durations import DurationError, format_duration, parse_duration_ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("10s", 10_000_000_000),
        ("1m30s", 90_000_000_000),
        ("500ms", 500_000_000),
        ("1.5h", 5_400_000_000_000),
        ("2h45m", 9_900_000_000_000),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("7ns", 7),
        ("0", 0),
        ("-2s", -2_000_000_000),
        (".5s", 500_000_000),
    ],
)
def test_go_durations_parse_to_nanoseconds(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    ("text", "words"), [("10", "missing unit"), ("", "empty"), ("1d", "invalid"), ("10 s", "invalid")]
)
def test_a_bad_duration_is_refused_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(DurationError, match=words):
        parse_duration_ns(text)


@pytest.mark.parametrize(("seconds", "text"), [(90, "1m30s"), (0.5, "500ms"), (10, "10s"), (3600, "1h0m0s")])
def test_durations_are_shown_the_go_way(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
