"""TLS to a broker, the same for every kind: the ``tls`` field (CA, client certificate and key files
mounted in the pod) and the client context made from it.

``tls: {}`` means TLS with the system's CAs and no client certificate; ``ca`` replaces the system's
CAs; ``cert`` and ``key`` (both or neither) present a client certificate to a broker that verifies
clients. Host names are always checked. A file that cannot be read is ``SourceUnavailable`` (a Secret
not mounted yet is retried, and said in status), never a crash.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.config_yaml import show
from common.errors import SourceUnavailable

FIELDS = ("ca", "cert", "key")


@dataclass(frozen=True)
class TlsFiles:
    """TLS files mounted in the pod; none given means the system's CAs and no client certificate."""

    ca: str = ""
    """CA certificates (PEM) the server's certificate must chain to."""
    cert: str = ""
    """The client certificate (PEM), for servers that verify clients."""
    key: str = ""
    """The client certificate's key (PEM)."""


def parse_tls(value: Any, problems: dict[str, str], field: str = "tls") -> TlsFiles | None:
    """The ``tls`` mapping in ``value`` (None when absent or bad); problems noted as ``field.<key>``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems[field] = "must be a mapping with ca, cert and key (file paths; {} for the system's CAs)"
        return None
    files: dict[str, str] = {}
    for key, path in value.items():
        if key not in FIELDS:
            problems[f"{field}.{key}"] = f"unknown field (known fields: {', '.join(FIELDS)})"
        elif not isinstance(path, str) or not path.strip():
            problems[f"{field}.{key}"] = f"must be a file path, got {show(path)}"
        else:
            files[key] = path.strip()
    if ("cert" in value) != ("key" in value):
        missing = "key" if "cert" in value else "cert"
        problems[f"{field}.{missing}"] = "a client certificate needs both cert and key"
    return TlsFiles(files.get("ca", ""), files.get("cert", ""), files.get("key", ""))


def client_context(files: TlsFiles | None, source: str) -> ssl.SSLContext:
    """A client context verifying the broker (``files.ca`` or the system's CAs), with the client
    certificate when given; ``SourceUnavailable`` for ``source`` when a file cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=files.ca if files and files.ca else None)
        if files is not None and files.cert:
            context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise SourceUnavailable(f"cannot load the TLS files: {exc}", source=source) from exc
    return context
