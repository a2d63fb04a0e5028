"""Reading a source's config YAML: keys given twice, nesting, aliases and sizes, and what events can carry."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from common.config_yaml import (
    MAX_EVENT_PAYLOAD_BYTES,
    MAX_VALUE_BYTES,
    YamlProblem,
    check_event_size,
    load,
    load_fields,
    load_one,
)
from common.errors import ConfigError
from gateways.calendar import KIND as CALENDAR

FIELDS = ("interval", "userPayload")


def data_problems(data: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_fields(data, FIELDS, kind="calendar")
    assert list(caught.value.problems) == ["data"]
    return caught.value.problems["data"]


def bomb(levels: int, width: int = 9) -> str:
    """A calendar config whose userPayload is ``width ** levels`` copies of one short string."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "interval: 1s\nuserPayload:\n" + "".join(f"  {line}\n" for line in lines)


def test_a_field_given_twice_is_refused_naming_both_lines() -> None:
    assert data_problems("interval: 1s\nuserPayload: a\ninterval: 2s\n") == [
        "key 'interval' is given twice: lines 1 and 3"
    ]


def test_a_field_given_twice_in_a_nested_mapping_or_on_one_line_is_refused_too() -> None:
    assert data_problems("userPayload: {a: 1, a: 2}\n") == ["key 'a' is given twice on line 1"]


def test_a_merge_key_overriding_a_field_is_not_a_key_given_twice() -> None:
    raw, problems = load_fields(
        "userPayload:\n  base: &b {x: 1, y: 2}\n  mine: {<<: *b, x: 3}\n", FIELDS, kind="calendar"
    )

    assert problems == {}
    assert raw["userPayload"]["mine"] == {"x": 3, "y": 2}


def test_a_small_alias_bomb_is_refused_at_once_without_being_expanded() -> None:
    text = bomb(9)
    assert len(text) < 1000

    tracemalloc.start()
    started = time.perf_counter()
    try:
        problems = data_problems(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert problems == ["expands to more than 1 MiB (1048576 bytes) once its aliases are followed"]
    assert time.perf_counter() - started < 1.0
    assert peak < 5 * 1024 * 1024


def test_aliases_that_stay_within_one_mebibyte_are_read() -> None:
    raw, _ = load_fields(bomb(3), FIELDS, kind="calendar")

    assert len(raw["userPayload"]["l3"]) == 9


def test_a_config_of_more_than_one_mebibyte_is_refused_before_it_is_parsed() -> None:
    big = "userPayload: '" + "x" * MAX_VALUE_BYTES + "'\n"

    assert data_problems(big) == [
        f"is {len(big)} bytes, more than the 1 MiB (1048576 bytes) a source's config may hold"
    ]


def test_nesting_deeper_than_the_limit_is_refused_however_deep_it_goes() -> None:
    for depth in (65, 100_000):
        assert data_problems("userPayload: " + "[" * depth + "]" * depth) == [
            "line 1: nested more than 64 levels deep"
        ]


def test_aliases_that_nest_past_the_limit_are_refused() -> None:
    lines = ["a0: &a0 " + "[" * 40 + "]" * 40]
    lines += [f"a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 for i in range(1, 3)]

    assert "levels deep, aliases followed" in data_problems("".join(f"{line}\n" for line in lines))[0]


def test_a_value_that_refers_to_itself_is_refused() -> None:
    assert "a value refers to itself" in data_problems("userPayload: &me [1, *me]\n")[0]
    assert "a value refers to itself" in data_problems("userPayload: &me {<<: *me}\n")[0]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("userPayload: [unclosed", "not valid YAML: line 1, column 23:"),
        ("userPayload: '\x00'", "not valid YAML: line 1: character #x0000 is not allowed in YAML text"),
        ('userPayload: "\\ud800"', "a lone surrogate, which is not text"),
        ("userPayload: " + "9" * 5000, "a value cannot be read: Exceeds the limit (4300 digits)"),
        ("userPayload: 2024-13-45", "a value cannot be read: month must be in 1..12"),
        ("userPayload: !!python/object:os.system x", "could not determine a constructor"),
        ("interval: 1s\n---\ninterval: 2s\n", "holds 2 YAML documents (expected one)"),
    ],
)
def test_what_cannot_be_read_is_a_problem_on_data_not_an_exception(data: str, words: str) -> None:
    problems = data_problems(data)

    assert words in problems[0]
    assert "use sys." not in problems[0]


def test_load_reads_every_document_and_names_every_key_given_twice_at_once() -> None:
    assert load("a: 1\n---\nb: 2\n", limit=100) == [{"a": 1}, {"b": 2}]
    with pytest.raises(YamlProblem) as caught:
        load("a: 1\na: 2\nb: 1\nb: 2\n", limit=100)
    assert caught.value.problems == [
        "key 'a' is given twice: lines 1 and 2",
        "key 'b' is given twice: lines 3 and 4",
    ]
    found: list[str] = []
    assert load("a: 1\na: 2\n", limit=100, duplicates=found) == [{"a": 2}]
    assert found == ["key 'a' is given twice: lines 1 and 2"]


def test_an_empty_document_is_none() -> None:
    assert load_one("") is None
    assert load_one("# nothing\n") is None


def test_an_event_the_transport_cannot_carry_is_a_problem_on_its_field() -> None:
    problems: dict[str, str] = {}
    check_event_size(MAX_EVENT_PAYLOAD_BYTES, "userPayload", problems)
    assert problems == {}

    check_event_size(5 * 1024 * 1024, "userPayload", problems)
    assert problems["userPayload"] == (
        "makes events of 5242880 bytes, more than an event can carry: it must fit in one gRPC message "
        f"(4 MiB), so at most {MAX_EVENT_PAYLOAD_BYTES} bytes of payload"
    )


def test_a_calendar_source_with_a_five_megabyte_user_payload_is_refused() -> None:
    data = "interval: 1s\nuserPayload: '" + "x" * (5 * 1024 * 1024) + "'\n"

    with pytest.raises(ConfigError) as caught:
        CALENDAR.validate("big", data, "v0.10")

    assert str(caught.value) == (
        f"event source 'big' is invalid: data: is {len(data)} bytes, more than the 1 MiB (1048576 bytes) "
        "a source's config may hold"
    )


def test_a_calendar_source_with_an_alias_bomb_payload_is_refused_quickly() -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="once its aliases are followed"):
        CALENDAR.validate("bomb", bomb(12), "v0.10")

    assert time.perf_counter() - started < 1.0


def test_a_calendar_source_whose_events_could_not_travel_is_refused() -> None:
    # 900 aliases of 1,000 control characters: 0.9 MB read, 5.4 MB once written as JSON escapes.
    data = (
        'interval: 1s\nuserPayload:\n  s: &s "'
        + "\\x01" * 1000
        + '"\n  all: ['
        + ", ".join(["*s"] * 900)
        + "]\n"
    )

    with pytest.raises(ConfigError, match="more than an event can carry"):
        CALENDAR.validate("wide", data, "v0.10")
