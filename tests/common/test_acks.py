"""Out-of-order acknowledgements turned into the contiguous prefix a broker can be told."""

from __future__ import annotations

import random

import pytest

from common.acks import Prefix


def test_the_prefix_moves_only_over_settled_positions_in_order() -> None:
    prefix = Prefix()
    for position in (10, 11, 12, 13):
        prefix.add(position)
    assert prefix.settle(11) is None  # 10 is not settled: nothing can be told
    assert prefix.settle(13) is None
    assert prefix.settle(10) == 11
    assert prefix.unsettled == 1
    assert prefix.settle(12) == 13
    assert (len(prefix), prefix.unsettled, prefix.last) == (0, 0, 13)


def test_repeated_and_unknown_positions_change_nothing() -> None:
    prefix = Prefix()
    prefix.add(5)
    prefix.add(9)
    assert prefix.settle(5) == 5
    assert prefix.settle(5) is None
    assert prefix.settle(3) is None
    assert (prefix.unsettled, prefix.last) == (1, 5)


def test_positions_must_be_handed_out_in_increasing_order() -> None:
    prefix = Prefix()
    prefix.add(4)
    with pytest.raises(ValueError, match="position 4 is not after 4"):
        prefix.add(4)


def test_any_order_of_settling_ends_at_the_last_position_and_never_passes_an_unsettled_one() -> None:
    rng = random.Random(7)
    positions = sorted(rng.sample(range(10_000), 500))
    prefix = Prefix()
    for position in positions:
        prefix.add(position)
    order = positions[:]
    rng.shuffle(order)
    settled: set[int] = set()
    for position in order:
        settled.add(position)
        moved = prefix.settle(position)
        if moved is not None:
            assert all(p in settled for p in positions if p <= moved)
            unsettled = [p for p in positions if p not in settled]
            assert not unsettled or moved < unsettled[0]
    assert prefix.last == positions[-1] and prefix.unsettled == 0
