"""Where event-source config comes from, behind one interface: a local file now, a ConfigMap later.

A source yields a full snapshot each time the config changes. A file that is broken or half-written
keeps the last good config running, and says so (log and status). Atomic renames and the symlink
swap of a mounted ConfigMap volume are both seen: the file is re-read whenever the inode, size or
modification time behind the path changes, and a snapshot is yielded only when the content did.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.configmap import EventSourceFileError, EventSourceSpec, parse_event_sources

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Every event source of one version of the config."""

    specs: tuple[EventSourceSpec, ...]
    origin: str


class ConfigSource(Protocol):
    """Yields a snapshot at start and after every change, until cancelled."""

    def snapshots(self) -> AsyncIterator[Snapshot]: ...


class StaticConfigSource:
    """A config that never changes (the embedded demo of ``gateway run``)."""

    def __init__(self, text: str, origin: str) -> None:
        self._snapshot = Snapshot(tuple(parse_event_sources(text, origin=origin)), origin)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        yield self._snapshot
        await asyncio.Event().wait()  # never changes: wait to be cancelled


Reporter = Callable[[bool, str], None]
"""Told (loaded, message) after every read: what status and /readyz show about the config."""


class FileConfigSource:
    """A ConfigMap YAML (or ``name: config`` mapping) on disk, polled for changes."""

    def __init__(self, path: Path, *, poll_interval: float = 0.5, report: Reporter | None = None) -> None:
        self.path = path
        self.poll_interval = poll_interval
        """Seconds between looks at the file; a stat per look, a read only when it changed."""
        self._report = report or (lambda loaded, message: None)

    def _stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows symlinks: a swapped ..data link shows as a new inode
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        stamp: tuple[int, int, int, int] | None = (-1, -1, -1, -1)
        digest = ""
        while True:
            now = self._stamp()
            if now != stamp:
                stamp = now
                snapshot, digest = self._read(digest)
                if snapshot is not None:
                    yield snapshot
            await asyncio.sleep(self.poll_interval)

    def _read(self, last_digest: str) -> tuple[Snapshot | None, str]:
        origin = str(self.path)
        try:
            text = self.path.read_text()
        except OSError as exc:
            self._keep(f"cannot read {origin}: {exc.strerror or exc}")
            return None, last_digest
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == last_digest:
            return None, digest
        try:
            specs = parse_event_sources(text, origin=origin)
        except EventSourceFileError as exc:
            self._keep(str(exc))
            return None, last_digest
        _log.info("Loaded %d event source(s) from %s.", len(specs), origin)
        self._report(True, f"loaded {len(specs)} event source(s) from {origin}")
        return Snapshot(tuple(specs), origin), digest

    def _keep(self, problem: str) -> None:
        _log.warning("Keeping the last good event-source config: %s", problem)
        self._report(False, f"keeping the last good config: {problem}")
