"""Event sources from a ConfigMap document (or a plain ``name: config`` mapping), as v0.11 read them.

Each key is one event source: ``name`` is the key, ``data`` the YAML value as text (a mapping value
is dumped once, deterministically), ``version`` the ConfigMap's ``argo-events-event-source-version``
label (``v0.10`` when there is none), and ``id`` the FNV-32a hash of key + value in decimal, exactly
as the v0.11 client computed it.

What a file must be, or it is refused as a whole (``EventSourceFileError``, every problem named):

- UTF-8 YAML (read as ``common.config_yaml`` reads: no key twice, bounded nesting and expansion),
  at most ``MAX_FILE_BYTES``, holding at least one document (an empty file is a broken one);
- a ConfigMap (``kind: ConfigMap``; other Kubernetes objects beside it are skipped) whose ``data`` is a
  mapping of names to configs, ``data: {}`` for none on purpose; or one plain mapping of names to
  configs. Any other Kubernetes object (``apiVersion`` and ``kind``) is not a ConfigMap;
- names as Kubernetes allows ConfigMap keys: 1-253 of ``-._a-zA-Z0-9``, not ``.``, ``..`` or
  ``..``-prefixed (they are NATS subjects and status keys too); text, never ``1``, ``true`` or ``null``;
- each value YAML text or a mapping, at most 1 MiB once written out and its aliases followed.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.config_yaml import MAX_VALUE_BYTES, YamlProblem, load, show, value_size
from common.errors import GatewayError
from common.rpc import eventing_pb2
from common.versions import EXPECTED_VERSION, VERSION_LABEL

MAX_FILE_BYTES = 16 * 1024 * 1024
"""The most an event-source file may hold, and all its sources expand to: 16 times what a ConfigMap
can hold, so only a file that is not an event-source config reaches it."""
MAX_NAME_LENGTH = 253
"""Kubernetes' limit on a ConfigMap key."""
_NAME = re.compile(r"[-._a-zA-Z0-9]+")
_CONFIGMAP_FIELDS = ("apiVersion", "kind", "metadata", "data", "binaryData", "immutable")
EXPECTED = (
    "expected a ConfigMap whose data maps event-source names to configs, or a plain mapping of names "
    "to configs"
)


class EventSourceFileError(GatewayError, ValueError):
    """The file cannot give event sources. ``origin`` names the file; ``problems`` holds each
    ``(field, problem)``, the field ``""`` for the file as a whole."""

    def __init__(self, origin: str, problems: Sequence[tuple[str, str]] | str) -> None:
        self.origin = origin
        self.problems = [("", problems)] if isinstance(problems, str) else list(problems)
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """Every problem on one line, e.g. ``data: missing (...)``; the file's name is ``origin``."""
        return "; ".join(f"{field}: {problem}" if field else problem for field, problem in self.problems)

    def __str__(self) -> str:
        return self.reason


def fnv32a(text: str) -> int:
    """FNV-1a, 32 bits, over the UTF-8 bytes of ``text`` (Go's ``hash/fnv.New32a``)."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(frozen=True)
class EventSourceSpec:
    """One event source as the client sends it to a server."""

    name: str
    data: str
    version: str = EXPECTED_VERSION

    @property
    def id(self) -> str:
        """v0.11's ``common.Hasher(key + value)``."""
        return str(fnv32a(self.name + self.data))

    def to_proto(self) -> eventing_pb2.EventSource:
        return eventing_pb2.EventSource(id=self.id, name=self.name, data=self.data, version=self.version)


NAME_RULE = (
    f"a name is 1 to {MAX_NAME_LENGTH} letters, digits, '-', '_' or '.', and neither '.' or '..' nor "
    "starts with '..' (a ConfigMap key)"
)


def name_problem(name: object) -> str:
    """Why ``name`` cannot name an event source (the Kubernetes ConfigMap key rule); ``""`` if it can."""
    if name is None:
        return "a key is null (empty or '~'), not a name"
    if not isinstance(name, str):
        spelled = str(name).lower() if isinstance(name, bool) else str(name)
        return f"key {spelled} is {_what(name)}, not text (quote it to use it as a name)"
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name) or name in (".", "..") or name[:2] == "..":
        return f"key {show(name)} is not a valid name: {NAME_RULE}"
    return ""


def read_event_sources(path: Path) -> list[EventSourceSpec]:
    """Every event source in the file at ``path``; ``OSError`` when it cannot be read at all."""
    return parse_event_sources(read_config_bytes(path), origin=str(path))


def read_config_bytes(path: Path) -> bytes:
    """At most ``MAX_FILE_BYTES`` + 1 bytes of the regular file at ``path``, never waiting: a FIFO, a
    device or a socket in its place (which would block an open or a read forever) is an ``OSError``
    saying what it is."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "a FIFO"
                if stat.S_ISFIFO(mode)
                else "not a regular file"
            )
            raise OSError(errno.EINVAL, f"{kind}, not a file of YAML")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as file:
            fd = -1
            return file.read(MAX_FILE_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def parse_event_sources(text: str | bytes, *, origin: str = "<text>") -> list[EventSourceSpec]:
    """Every event source in ``text``: a ConfigMap (one of several YAML documents), or a mapping."""
    problems: list[tuple[str, str]] = []
    docs = _documents(_text(text, origin), origin, problems)
    data, version, field = _select(docs, origin, problems)
    specs: list[EventSourceSpec] = []
    sizes: dict[int, int] = {}
    unnamed: list[str] = []
    for key, value in data.items():
        problem = name_problem(key)
        if problem:
            if isinstance(key, str):
                unnamed.append(show(key))
            else:
                problems.append((field, problem))
            continue
        try:
            specs.append(EventSourceSpec(key, _value_text(key, value, sizes), version))
        except _ValueProblem as exc:
            problems.append((field, str(exc)))
    if len(unnamed) == 1:
        problems.append((field, f"key {unnamed[0]} is not a valid name: {NAME_RULE}"))
    elif unnamed:
        problems.append((field, f"keys {', '.join(unnamed)} are not valid names: {NAME_RULE}"))
    if problems:
        raise EventSourceFileError(origin, problems)
    return specs


class _ValueProblem(ValueError):
    """A source's value cannot be a config (its message says why)."""


def _text(text: str | bytes, origin: str) -> str:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise EventSourceFileError(origin, f"holds more than {MAX_FILE_BYTES} bytes ({EXPECTED})")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            raise EventSourceFileError(
                origin, f"not UTF-8 text: byte 0x{byte:02x} at offset {exc.start} ({EXPECTED}, in YAML)"
            ) from None
    if not text.strip():
        raise EventSourceFileError(origin, f"is empty ({EXPECTED}, 'data: {{}}' or '{{}}' for none)")
    return text


def _documents(text: str, origin: str, problems: list[tuple[str, str]]) -> list[Any]:
    """The file's documents; keys given twice are added to ``problems``, to be named with the rest."""
    duplicates: list[str] = []
    try:
        docs = [doc for doc in load(text, limit=MAX_FILE_BYTES, duplicates=duplicates) if doc is not None]
    except YamlProblem as exc:
        raise EventSourceFileError(origin, [("", problem) for problem in exc.problems]) from None
    problems.extend(("", duplicate) for duplicate in duplicates)
    if not docs:
        raise EventSourceFileError(origin, f"holds no YAML document, only comments ({EXPECTED})")
    return docs


def _is_configmap(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if "kind" in doc:
        return bool(doc["kind"] == "ConfigMap")
    return "data" in doc and "metadata" in doc  # a ConfigMap written without its kind


def _is_object(doc: Any) -> bool:
    """A Kubernetes object: it has an apiVersion and a kind, or a kind and metadata."""
    return isinstance(doc, dict) and "kind" in doc and ("apiVersion" in doc or "metadata" in doc)


def _select(docs: list[Any], origin: str, problems: list[tuple[str, str]]) -> tuple[dict[Any, Any], str, str]:
    """(the mapping of names to configs, the event-source version, the field it is in)."""
    configmaps = [doc for doc in docs if _is_configmap(doc)]
    if len(configmaps) > 1:
        raise EventSourceFileError(origin, f"holds {len(configmaps)} ConfigMaps (expected one)")
    if configmaps:
        strays = [n for n, doc in enumerate(docs, 1) if not (isinstance(doc, dict) and "kind" in doc)]
        if strays:
            raise EventSourceFileError(
                origin,
                f"document {strays[0]} is not a Kubernetes object: beside a ConfigMap a file may hold "
                "other resources, but no event sources outside the ConfigMap's data",
            )
        return _configmap(configmaps[0], origin, problems)
    objects = [doc for doc in docs if _is_object(doc)]
    if objects:
        kinds = ", ".join(sorted({str(doc["kind"])[:40] for doc in objects}))
        raise EventSourceFileError(origin, f"not a ConfigMap: kind {kinds} ({EXPECTED})")
    if len(docs) > 1:
        raise EventSourceFileError(origin, f"holds {len(docs)} YAML documents and no ConfigMap ({EXPECTED})")
    if not isinstance(docs[0], dict):
        raise EventSourceFileError(origin, f"is {_what(docs[0])} ({EXPECTED})")
    return docs[0], EXPECTED_VERSION, ""


def _configmap(
    doc: dict[Any, Any], origin: str, problems: list[tuple[str, str]]
) -> tuple[dict[Any, Any], str, str]:
    for key in doc:
        if key not in _CONFIGMAP_FIELDS:
            known = ", ".join(_CONFIGMAP_FIELDS)
            problems.append(("", f"unknown field {show(key)} in the ConfigMap (its fields: {known})"))
    version = _version(doc.get("metadata"), problems)
    data = doc.get("data", _MISSING)
    if data is _MISSING:
        problems.append(
            ("data", "missing: the event sources are the ConfigMap's data (write 'data: {}' for none)")
        )
    elif data is None:
        problems.append(("data", "is empty (null): write 'data: {}' for no event sources"))
    elif not isinstance(data, dict):
        problems.append(("data", f"must be a mapping of event-source names to configs, got {_what(data)}"))
    if not isinstance(data, dict):
        raise EventSourceFileError(origin, problems)
    return data, version, "data"


_MISSING: Any = object()


def _version(metadata: Any, problems: list[tuple[str, str]]) -> str:
    """The ConfigMap's event-source version label; ``EXPECTED_VERSION`` when there is none."""
    if metadata is None:
        return EXPECTED_VERSION
    if not isinstance(metadata, dict):
        problems.append(("metadata", f"must be a mapping, got {_what(metadata)}"))
        return EXPECTED_VERSION
    for name in ("name", "namespace"):
        if name in metadata and not isinstance(metadata[name], str):
            problems.append((f"metadata.{name}", f"must be text, got {_what(metadata[name])}"))
    for name in ("labels", "annotations"):
        entries = metadata.get(name)
        if isinstance(entries, dict):
            for key, value in entries.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    problems.append((f"metadata.{name}.{key}", f"must be text, got {_what(value)}"))
        elif entries is not None:
            problems.append((f"metadata.{name}", f"must be a mapping of names to text, got {_what(entries)}"))
    labels = metadata.get("labels")
    if labels is None:
        return EXPECTED_VERSION
    if not isinstance(labels, dict):
        return EXPECTED_VERSION
    version = labels.get(VERSION_LABEL, EXPECTED_VERSION)
    if not isinstance(version, str):
        return EXPECTED_VERSION
    return version


def _value_text(name: str, value: Any, sizes: dict[int, int]) -> str:
    """The config of source ``name`` as text, within ``MAX_VALUE_BYTES`` once its aliases are followed."""
    if not isinstance(value, str | dict | list):
        raise _ValueProblem(f"key {name!r}: the value must be YAML text or a mapping, got {_what(value)}")
    try:
        size = value_size(value, sizes)
    except YamlProblem as exc:
        raise _ValueProblem(f"key {name!r}: {exc}") from None
    limit = f"the 1 MiB ({MAX_VALUE_BYTES} bytes) a source's config may hold"
    if isinstance(value, str):
        if size - 2 > MAX_VALUE_BYTES:
            raise _ValueProblem(f"key {name!r}: the config is {size - 2} bytes, more than {limit}")
        return value
    if size > MAX_VALUE_BYTES:
        raise _ValueProblem(f"key {name!r}: once its aliases are followed, the config is more than {limit}")
    text = yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True)
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise _ValueProblem(
            f"key {name!r}: written out, the config is {len(text.encode())} bytes, more than {limit}"
        )
    return text


def _what(value: Any) -> str:
    """What ``value`` is, for a message that must not repeat a config's contents."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
