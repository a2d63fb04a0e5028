"""Reading event sources from ConfigMap YAML, as v0.11's client did."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from common.configmap import (
    MAX_FILE_BYTES,
    EventSourceFileError,
    EventSourceSpec,
    fnv32a,
    parse_event_sources,
    read_event_sources,
)


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
        ("kind: ConfigMap\nmetadata: {}\ndata: [1]\n", "data: must be a mapping"),
    ],
)
def test_a_broken_file_is_refused_saying_where(text: str, words: str) -> None:
    with pytest.raises(EventSourceFileError, match=words):
        parse_event_sources(text, origin="cm.yaml")


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n"


def refused(text: str | bytes) -> EventSourceFileError:
    with pytest.raises(EventSourceFileError) as caught:
        parse_event_sources(text, origin="cm.yaml")
    return caught.value


def test_the_error_carries_the_file_and_each_field_and_does_not_repeat_the_file_name() -> None:
    error = refused(CM + "dta:\n  a: 'interval: 1s'\n")

    assert error.origin == "cm.yaml"
    assert [field for field, _ in error.problems] == ["", "data"]
    assert "unknown field 'dta'" in error.problems[0][1]
    assert error.problems[1][1].startswith("missing: the event sources are the ConfigMap's data")
    assert str(error) == error.reason
    assert "cm.yaml" not in str(error)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (CM + "dta:\n  a: 'interval: 1s'\n", "data: missing"),
        (CM, "data: missing"),
        (CM + "data:\n", "data: is empty (null): write 'data: {}' for no event sources"),
        (CM + "data:\na: |-\n  interval: 1s\n", "unknown field 'a' in the ConfigMap"),
        (CM + "  data:\n    a: 'interval: 1s'\n", "data: missing"),
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("# every source commented out\n", "holds no YAML document, only comments"),
    ],
)
def test_a_configmap_without_data_or_an_empty_file_is_refused_saying_what_was_expected(
    text: str, words: str
) -> None:
    error = refused(text)

    assert words in str(error)
    assert "expected" in str(error) or "data: {}" in str(error)


def test_an_explicit_empty_data_means_no_event_sources_on_purpose() -> None:
    assert parse_event_sources(CM + "data: {}\n") == []
    assert parse_event_sources("{}\n") == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            "apiVersion: argoproj.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec: {type: calendar}\n",
            "Gateway",
        ),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {a: YQ==}\n", "Secret"),
        ("kind: Secret\nmetadata: {name: s}\ndata: {a: YQ==}\n", "Secret"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Pod\n",
            "Pod, Service",
        ),
    ],
)
def test_another_kubernetes_object_is_not_a_configmap_and_is_not_read_as_sources(
    text: str, kind: str
) -> None:
    assert str(refused(text)).startswith(f"not a ConfigMap: kind {kind} (expected a ConfigMap whose data")


def test_the_configmap_is_read_beside_other_kubernetes_objects_but_not_beside_stray_mappings() -> None:
    gateway = "apiVersion: argoproj.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\n"
    configmap = CM + "data: {a: 'interval: 1s'}\n"

    assert [s.name for s in parse_event_sources(f"{gateway}---\n{configmap}")] == ["a"]
    assert "document 2 is not a Kubernetes object" in str(refused(f"{configmap}---\nb: 'interval: 1s'\n"))
    assert "holds 2 ConfigMaps" in str(refused(f"{configmap}---\n{configmap}"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("kind: ConfigMap\nmetadata: [x]\ndata: {}\n", "metadata: must be a mapping, got a list"),
        ("kind: ConfigMap\nmetadata: text\ndata: {}\n", "metadata: must be a mapping, got text"),
        ("kind: ConfigMap\nmetadata: {labels: [x]}\ndata: {}\n", "metadata.labels: must be a mapping"),
        ("kind: ConfigMap\nmetadata: {labels: 7}\ndata: {}\n", "got a number"),
        (
            "kind: ConfigMap\nmetadata: {labels: {argo-events-event-source-version: 0.1}}\ndata: {}\n",
            "metadata.labels.argo-events-event-source-version: must be text, got a number",
        ),
        (
            "kind: ConfigMap\nmetadata: {}\ndata: 5\n",
            "data: must be a mapping of event-source names to configs",
        ),
        ("[1, 2]\n", "is a list (expected a ConfigMap"),
        ("just text\n", "is text (expected a ConfigMap"),
    ],
)
def test_parts_of_the_wrong_type_are_typed_errors_naming_the_field(text: str, words: str) -> None:
    assert words in str(refused(text))


def test_bytes_that_are_not_utf8_are_refused_naming_the_byte_and_its_offset() -> None:
    error = refused(b"a: \xff\xfe\n")

    assert str(error).startswith("not UTF-8 text: byte 0xff at offset 3 (expected a ConfigMap")


def test_utf8_bytes_are_read_as_text() -> None:
    assert parse_event_sources("a: 'userPayload: café'\n".encode())[0].data == "userPayload: café"


@pytest.mark.parametrize(
    "name", ["", "a b", "x>y", "events.*", "tab\tname", "é", "a/b", ".", "..", "..hidden", "n" * 254, "a\n"]
)
@pytest.mark.parametrize("form", ["configmap", "plain"])
def test_a_name_that_breaks_the_configmap_key_rule_is_refused_in_either_form(name: str, form: str) -> None:
    key = json.dumps(name)  # a YAML double-quoted scalar
    text = f"{CM}data:\n  {key}: 'interval: 1s'\n" if form == "configmap" else f"{key}: 'interval: 1s'\n"

    assert "is not a valid name: a name is 1 to 253 letters, digits, '-', '_' or '.'" in str(refused(text))


@pytest.mark.parametrize("name", ["a", "every-10s", "a.b_c-D9", "n" * 253, ".hidden", "x..y"])
def test_a_name_within_the_configmap_key_rule_is_accepted(name: str) -> None:
    assert [s.name for s in parse_event_sources(f"{json.dumps(name)}: 'interval: 1s'\n")] == [name]


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("null", "a key is null"),
        ("~", "a key is null"),
        ("1", "key 1 is a number, not text (quote it to use it as a name)"),
        ("1.5", "key 1.5 is a number"),
        ("true", "key true is true/false, not text"),
        ("2024-01-01", "key 2024-01-01 is a date, not text"),
    ],
)
def test_a_key_that_is_not_text_is_refused(key: str, words: str) -> None:
    assert words in str(refused(f"{key}: 'interval: 1s'\n"))


def test_a_key_given_twice_is_refused_naming_both_lines() -> None:
    text = CM + "data:\n  a: 'interval: 1s'\n  b: 'interval: 2s'\n  a: 'interval: 3s'\n"

    assert str(refused(text)) == "key 'a' is given twice: lines 6 and 8"


def test_keys_that_yaml_reads_as_one_are_refused_naming_both_lines() -> None:
    error = refused("1: 'interval: 1s'\ntrue: 'interval: 2s'\n")

    assert "keys 1 (line 1) and true (line 2) are the same key once read" in str(error)


def test_every_problem_of_a_file_is_named_at_once() -> None:
    text = "a: 'interval: 1s'\na: 'interval: 2s'\n'a b': x\n'': y\n1: z\nc: 3\n"

    assert [problem for _, problem in refused(text).problems] == [
        "key 'a' is given twice: lines 1 and 2",
        "key 1 is a number, not text (quote it to use it as a name)",
        "key 'c': the value must be YAML text or a mapping, got a number",
        "keys 'a b', '' are not valid names: a name is 1 to 253 letters, digits, '-', '_' or '.', and "
        "neither '.' or '..' nor starts with '..' (a ConfigMap key)",
    ]


def test_a_value_over_one_mebibyte_is_refused() -> None:
    big = "x" * (1024 * 1024)
    assert len(parse_event_sources(f"a: '{big}'\n")[0].data) == 1024 * 1024

    assert "key 'a': the config is 1048577 bytes" in str(refused(f"a: '{big}x'\n"))


def test_a_mapping_value_whose_aliases_expand_past_one_mebibyte_is_refused_without_building_it() -> None:
    # Nine levels of nine aliases: 9**9 copies of a short string, about 5 GB written out.
    lines = ["base: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = "a:\n  userPayload:\n" + "".join(f"    {line}\n" for line in lines) + "  interval: 1s\n"

    tracemalloc.start()
    try:
        error = refused(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert "expands to more than" in str(error)
    assert peak < 20 * 1024 * 1024


def test_a_value_that_refers_to_itself_is_refused() -> None:
    assert "refers to itself" in str(refused("a: &loop {interval: 1s, again: *loop}\n"))


def test_a_real_file_is_read_from_its_bytes_and_an_oversized_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_bytes(b"a: 'interval: 1s'\n")
    assert [s.name for s in read_event_sources(path)] == ["a"]

    path.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(EventSourceFileError, match=f"holds more than {MAX_FILE_BYTES} bytes"):
        read_event_sources(path)
    with pytest.raises(OSError):
        read_event_sources(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ("{labels: {a: {b: 1}}}", "metadata.labels.a"),
        ("{labels: {a: null}}", "metadata.labels.a"),
        ("{labels: [x]}", "metadata.labels"),
        ("{annotations: 5}", "metadata.annotations"),
        ("{annotations: {a: [1]}}", "metadata.annotations.a"),
        ("{name: [a]}", "metadata.name"),
        ("{namespace: {a: 1}}", "metadata.namespace"),
    ],
)
def test_metadata_kubernetes_would_reject_is_refused_naming_the_field(metadata: str, field: str) -> None:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {metadata}\ndata: {{a: 'interval: 1s'}}\n"
    with pytest.raises(EventSourceFileError) as refused:
        parse_event_sources(text)
    assert field in str(refused.value)
