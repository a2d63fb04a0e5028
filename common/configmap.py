"""Event sources from a ConfigMap document (or a plain ``name: config`` mapping), as v0.11 read them.

Each key is one event source: ``name`` is the key, ``data`` the YAML value as text (a mapping value
is dumped once, deterministically), ``version`` the ConfigMap's ``argo-events-event-source-version``
label (``v0.10`` when there is none), and ``id`` the FNV-32a hash of key + value in decimal, exactly
as the v0.11 client computed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from common.rpc import eventing_pb2
from common.versions import EXPECTED_VERSION, VERSION_LABEL


class EventSourceFileError(ValueError):
    """The document is not a ConfigMap or mapping of event sources; the message says where."""


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


def _value_text(name: str, value: Any, origin: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True)
    raise EventSourceFileError(
        f"{origin}: key {name!r}: the value must be YAML text or a mapping, got {value!r}"
    )


def _is_configmap(doc: Any) -> bool:
    return isinstance(doc, dict) and (doc.get("kind") == "ConfigMap" or ("data" in doc and "metadata" in doc))


def parse_event_sources(text: str, *, origin: str = "<text>") -> list[EventSourceSpec]:
    """Every event source in ``text``: a ConfigMap (one of several YAML documents), or a mapping."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise EventSourceFileError(f"{origin}: not valid YAML: {exc}") from exc
    configmaps = [d for d in docs if _is_configmap(d)]
    if len(configmaps) > 1:
        raise EventSourceFileError(f"{origin}: holds {len(configmaps)} ConfigMaps; give one")
    if configmaps:
        doc = configmaps[0]
        data = doc.get("data") or {}
        labels = (doc.get("metadata") or {}).get("labels") or {}
        version = str(labels.get(VERSION_LABEL, EXPECTED_VERSION))
    elif len(docs) == 1 and isinstance(docs[0], dict):
        data, version = docs[0], EXPECTED_VERSION
    elif not docs:
        return []
    else:
        raise EventSourceFileError(
            f"{origin}: expected a ConfigMap or a mapping of event-source names to configs"
        )
    if not isinstance(data, dict):
        raise EventSourceFileError(f"{origin}: 'data' must be a mapping of event-source names to configs")
    return [EventSourceSpec(str(k), _value_text(str(k), v, origin), version) for k, v in data.items()]
