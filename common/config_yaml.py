"""Reading config YAML: safe, bounded and unambiguous; and the first step of every gateway's ``parse``.

Every config is read through ``load``: safe YAML (no Python objects) that also refuses

- a key given twice in one mapping (YAML keeps the last silently), naming both lines;
- nesting deeper than ``MAX_DEPTH``, and a value that refers to itself through an alias;
- a document that would expand past a size limit once its aliases are followed. The size is
  measured on the composed node graph, each shared node once, before any Python object is built:
  an alias bomb of a few hundred bytes is measured, never expanded.

A source's value may expand to at most ``MAX_VALUE_BYTES`` (1 MiB), and an event it makes must fit in
one gRPC message: ``check_event_size`` is the check a kind runs on what its events carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common.errors import ConfigError

MAX_VALUE_BYTES = 1024 * 1024
"""1 MiB: the most one event source's config may expand to, aliases followed (a ConfigMap holds at
most 1 MiB in all)."""
MAX_DEPTH = 64
"""Nesting levels a YAML document may have, aliases followed."""
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""gRPC's default limit on a received message, which the client keeps: every event must fit in one."""
EVENT_HEADROOM_BYTES = 64 * 1024
"""What an event carries besides its payload (id, subject, content type, extensions), with room."""
MAX_EVENT_PAYLOAD_BYTES = MAX_MESSAGE_BYTES - EVENT_HEADROOM_BYTES
"""The largest payload an event can carry to the client."""

_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(ValueError):
    """Text a config cannot be read from; ``problems`` holds one line per reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that bounds nesting and records every key given twice in one mapping."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.duplicates: list[str] = []

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                line = event.start_mark.line + 1
                raise YamlProblem([f"line {line}: nested more than {MAX_DEPTH} levels deep"])
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, tuple[int, str]] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue
            line = key_node.start_mark.line + 1
            try:
                key = self.construct_object(key_node)
                first = seen.get(key)
            except (yaml.YAMLError, ValueError, TypeError):
                continue  # not a key Python can hold: construction says so, with its line
            if first is None:
                seen[key] = (line, key_node.value)
            elif first[1] != key_node.value:  # 1 and true, 1 and 1.0: one key once read
                self.duplicates.append(
                    f"keys {first[1][:40]} (line {first[0]}) and {key_node.value[:40]} (line {line}) "
                    "are the same key once read"
                )
            elif first[0] == line:
                self.duplicates.append(f"key {show(key)} is given twice on line {line}")
            else:
                self.duplicates.append(f"key {show(key)} is given twice: lines {first[0]} and {line}")
        return node


def show(value: Any, limit: int = 60) -> str:
    """``value`` for a message: its repr, cut to ``limit`` characters (a key can be a megabyte long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]} ({len(str(value))} characters)"


def load(text: str, *, limit: int, duplicates: list[str] | None = None) -> list[Any]:
    """Every document in ``text``, each checked and measured (``limit`` bytes, aliases followed) before
    it is built; ``YamlProblem`` naming each reason otherwise. Keys given twice are a problem too, unless
    ``duplicates`` is given: then they are added to it (the last one kept), so that the caller can name
    them with its own problems."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        nodes: list[Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                nodes.append(node)
        if loader.duplicates and duplicates is None:
            raise YamlProblem(loader.duplicates)
        if duplicates is not None:
            duplicates.extend(loader.duplicates)
        for node in nodes:
            _Measure(limit).size(node, 1)
        docs: list[Any] = [loader.construct_document(node) for node in nodes]
    except yaml.MarkedYAMLError as exc:
        raise YamlProblem([f"not valid YAML: {_marked(exc)}"]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        where = (
            f"line {line}: character #x{exc.character:04x}" if isinstance(exc.character, int) else "a byte"
        )
        raise YamlProblem([f"not valid YAML: {where} is not allowed in YAML text"]) from None
    except yaml.YAMLError as exc:
        raise YamlProblem([f"not valid YAML: {exc}"]) from None
    except RecursionError:
        raise YamlProblem([f"nested more than {MAX_DEPTH} levels deep"]) from None
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, YamlProblem):
            raise
        reason = str(exc).split("; use sys.", 1)[0]  # Python's own advice is not the reader's
        raise YamlProblem([f"a value cannot be read: {reason}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    for doc in docs:
        value_size(doc)  # lone surrogates, which no UTF-8 text can hold
    return docs


def load_one(text: str, *, limit: int = MAX_VALUE_BYTES) -> Any:
    """The single document in ``text`` (``None`` when there is none), read as ``load`` reads."""
    docs = load(text, limit=limit)
    if len(docs) > 1:
        raise YamlProblem([f"holds {len(docs)} YAML documents (expected one)"])
    return docs[0] if docs else None


def _marked(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = ": ".join(part for part in (exc.context, exc.problem) if part)
    return where + (what or "cannot be parsed")


class _Measure:
    """The expanded size of a node graph: each node measured once, so a bomb costs its node count."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: dict[int, tuple[int, int]] = {}
        """id(node) -> (bytes once expanded, levels below and including it)."""
        self.open: set[int] = set()

    def size(self, node: Node, depth: int) -> int:
        total, _ = self._walk(node, depth)
        if total > self.limit:
            raise YamlProblem([f"expands to more than {_amount(self.limit)} once its aliases are followed"])
        return total

    def _walk(self, node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        known = self.sizes.get(key)
        if known is None:
            if key in self.open:
                line = node.start_mark.line + 1
                raise YamlProblem([f"line {line}: a value refers to itself (an alias inside its own anchor)"])
            self.open.add(key)
            known = self._measure(node, depth)
            self.open.discard(key)
            self.sizes[key] = known
        if depth + known[1] - 1 > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise YamlProblem([f"line {line}: nested more than {MAX_DEPTH} levels deep, aliases followed"])
        return known

    def _measure(self, node: Node, depth: int) -> tuple[int, int]:
        if isinstance(node, ScalarNode):
            return len(str(node.value).encode("utf-8", "surrogatepass")) + 2, 1
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        total, height = 2, 0
        for child in children:
            size, levels = self._walk(child, depth + 1)
            total, height = total + size, max(height, levels)
            if total > self.limit:
                break  # over already: the rest need not be measured
        return total, height + 1


def value_size(value: Any, seen: dict[int, int] | None = None) -> int:
    """About how many bytes ``value`` (loaded YAML) is once written out, each shared object counted
    wherever it appears; ``YamlProblem`` for a string no UTF-8 text can hold (a lone surrogate)."""
    memo = {} if seen is None else seen
    known = memo.get(id(value))
    if known is not None:
        return known
    if isinstance(value, str):
        try:
            size = len(value.encode("utf-8")) + 2
        except UnicodeEncodeError as exc:
            raise YamlProblem(
                [f"a string holds {exc.object[exc.start]!r}, a lone surrogate, which is not text"]
            ) from None
    elif isinstance(value, bytes):
        size = len(value) * 4 // 3 + 4
    elif isinstance(value, dict):
        size = 2 + sum(value_size(k, memo) + value_size(v, memo) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size = 2 + sum(value_size(item, memo) for item in value)
    elif isinstance(value, int):
        size = value.bit_length() // 3 + 2
    else:
        size = 32  # None, bool, float, dates
    memo[id(value)] = size
    return size


def _amount(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB ({size} bytes)" if size % (1024 * 1024) == 0 else f"{size} bytes"


def check_event_size(size: int, field: str, problems: dict[str, str]) -> None:
    """Note under ``field`` when an event whose payload is ``size`` bytes could not reach the client.

    A kind calls this at validation with what its events will carry (the calendar: its payload with
    ``userPayload`` in it), so a source whose every event would fail is refused up front."""
    if size > MAX_EVENT_PAYLOAD_BYTES:
        problems[field] = (
            f"makes events of {size} bytes, more than an event can carry: it must fit in one gRPC "
            f"message (4 MiB), so at most {MAX_EVENT_PAYLOAD_BYTES} bytes of payload"
        )


def load_fields(data: str, fields: Sequence[str], *, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The mapping in ``data`` and a ``{field: problem}`` for each key not in ``fields``.

    Unknown keys are problems, not ignored: a typo such as ``shedule`` would otherwise leave a source
    that silently never does what was meant. Not YAML, a key given twice, more than 1 MiB once aliases
    are followed, or not a mapping raises ``ConfigError`` on ``data`` at once; an empty value is an
    empty mapping.
    """
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise ConfigError(
            {"data": f"is {size} bytes, more than the {_amount(MAX_VALUE_BYTES)} a source's config may hold"}
        )
    try:
        raw = load_one(data)
    except YamlProblem as exc:
        raise ConfigError({"data": exc.problems}) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError({"data": f"must be a mapping of {kind} fields"})
    known = ", ".join(fields)
    problems = {str(key): f"unknown field (known fields: {known})" for key in raw if key not in fields}
    return raw, problems
