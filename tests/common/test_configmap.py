"""Reading event sources from ConfigMap YAML, as v0.11's client did."""

from __future__ import annotations

import pytest

from common.configmap import EventSourceFileError, EventSourceSpec, fnv32a, parse_event_sources


def test_fnv32a_matches_the_published_test_vectors() -> None:
    # Go's hash/fnv New32a: "" -> 0x811c9dc5, "a" -> 0xe40c292c, "foobar" -> 0xbf9cf968.
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert fnv32a("foobar") == 0xBF9CF968


def test_the_id_is_the_decimal_fnv32a_of_key_and_value() -> None:
    spec = EventSourceSpec("example", "interval: 10s")
    assert spec.id == str(fnv32a("exampleinterval: 10s"))
    assert spec.to_proto().id == spec.id


def test_a_configmap_gives_one_source_per_key_with_the_label_version() -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
  labels: {argo-events-event-source-version: v0.11}
data:
  a: |-
    interval: 10s
  b: "schedule: '* * * * *'"
"""
    specs = parse_event_sources(text)
    assert [(s.name, s.data, s.version) for s in specs] == [
        ("a", "interval: 10s", "v0.11"),
        ("b", "schedule: '* * * * *'", "v0.11"),
    ]


def test_a_plain_mapping_is_accepted_and_mapping_values_are_dumped_deterministically() -> None:
    specs = parse_event_sources("a:\n  userPayload: {z: 1, a: 2}\n  interval: 1s\n")
    assert specs[0].version == "v0.10"
    assert specs[0].data == "interval: 1s\nuserPayload:\n  a: 2\n  z: 1\n"
    assert parse_event_sources("a:\n  interval: 1s\n  userPayload: {a: 2, z: 1}\n")[0].id == specs[0].id


def test_the_configmap_is_found_among_other_documents() -> None:
    text = "kind: Gateway\nspec: {}\n---\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 'interval: 1s'}\n"
    assert [s.name for s in parse_event_sources(text)] == ["a"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: [unclosed", "not valid YAML"),
        ("- 1\n- 2\n", "expected a ConfigMap"),
        ("a: 3\n", "key 'a'"),
        ("kind: ConfigMap\nmetadata: {}\ndata: [1]\n", "'data' must be a mapping"),
    ],
)
def test_a_broken_file_is_refused_saying_where(text: str, words: str) -> None:
    with pytest.raises(EventSourceFileError, match=words):
        parse_event_sources(text, origin="cm.yaml")
