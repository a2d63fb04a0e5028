"""The event-source version check every server applies before parsing a config."""

from __future__ import annotations

import logging

from common.errors import VersionError

EXPECTED_VERSION = "v0.10"
"""What v0.11 clients send: every version constant in Argo Events v0.11 is still ``v0.10``."""
TOLERATED_VERSIONS = frozenset({"v0.11"})
"""Accepted with a warning: users labelled sources ``v0.11`` and were rejected (argo-events#398, #412)."""

VERSION_LABEL = "argo-events-event-source-version"
"""The ConfigMap label that carries the version."""

_log = logging.getLogger(__name__)


def check_version(version: str, *, source: str = "") -> None:
    """Accept ``v0.10``; accept ``v0.11`` with a warning; reject anything else, naming it."""
    if version == EXPECTED_VERSION:
        return
    if version in TOLERATED_VERSIONS:
        _log.warning(
            "Event source %r has version %r; treating it as %s, which is what this gateway speaks.",
            source,
            version,
            EXPECTED_VERSION,
            extra={"source": source},
        )
        return
    shown = repr(version) if version else "missing"
    tolerated = ", ".join(sorted(TOLERATED_VERSIONS))
    raise VersionError(
        {"version": f"gateway expects {EXPECTED_VERSION} (or {tolerated}), got {shown}"}, source=source
    )
