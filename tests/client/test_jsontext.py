"""The JSON check structured mode and JSON labels rely on: strict, bounded, and never slow."""

from __future__ import annotations

import pytest

from common.client.jsontext import MAX_DEPTH, json_text


def _chain(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "deepest"),
    [
        (_chain(MAX_DEPTH), True),
        (_chain(MAX_DEPTH + 1), False),
        ("[" + ",".join([_chain(MAX_DEPTH - 1)] * 100) + "]", True),
        ("[" + ",".join([_chain(MAX_DEPTH)] * 100) + "]", False),
        ('["' + "[" * 100 + '"]', True),
        (r'{"k": "\\", "b": ["[\"]"]}', True),
    ],
    ids=["64", "65", "many-64", "many-65", "brackets-in-a-string", "escaped-backslash"],
)
def test_nesting_is_counted_outside_strings_up_to_the_limit(text: str, deepest: bool) -> None:
    assert (json_text(text.encode()) is not None) is deepest


@pytest.mark.parametrize(
    ("payload", "is_json"),
    [
        (b"[" * 65 + b'"' + b'\\"' * 200_000, False),  # an unterminated string of escaped quotes
        (b"[" * 65 + b'"' * 200_000, False),
        (("[" + ",".join([_chain(63)] * 20_000) + "]").encode(), True),
    ],
    ids=["escaped-quotes", "bare-quotes", "a-million-brackets"],
)
@pytest.mark.timeout(60)  # a hang guard, not a speed claim: quadratic work on these takes hours
def test_no_payload_makes_the_check_slower_than_linear(payload: bytes, is_json: bool) -> None:
    assert (json_text(payload) is not None) is is_json
