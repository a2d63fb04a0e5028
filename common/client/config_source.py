"""Where event-source config comes from, behind one interface: a local file now, a ConfigMap later.

A source yields a full snapshot each time the config changes. A file that cannot be used (any bytes,
any YAML shape: not UTF-8, not a ConfigMap, no ``data``, a 0-byte truncation, a bad name...) never
stops the watch: the last good config stays in force, a snapshot of it says why (``keeping``), and
the next good file is followed. Atomic renames and the symlink swap of a mounted ConfigMap volume are
both seen: the file is re-read whenever the inode, size or modification time behind the path
changes, and a snapshot is yielded only when the content did.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.configmap import EventSourceFileError, EventSourceSpec, parse_event_sources, read_config_bytes

_log = logging.getLogger(__name__)


class Sources(tuple[EventSourceSpec, ...]):
    """The event sources of one snapshot, knowing where they come from and, when they are the last
    good ones kept in force, why the file's current content was refused."""

    origin: str
    keeping: str

    def __new__(cls, specs: Iterable[EventSourceSpec], origin: str = "", keeping: str = "") -> Sources:
        self = super().__new__(cls, specs)
        self.origin = origin
        self.keeping = keeping
        return self

    @property
    def summary(self) -> str:
        """``2 event source(s) from cm.yaml``."""
        return f"{len(self)} event source(s) from {self.origin}"


class Snapshot:
    """Every event source of one version of the config."""

    def __init__(self, specs: Iterable[EventSourceSpec], origin: str, keeping: str = "") -> None:
        self.specs = Sources(specs, origin, keeping)

    @property
    def origin(self) -> str:
        return self.specs.origin

    @property
    def keeping(self) -> str:
        """Why the file's current content was refused; ``""`` when ``specs`` is what the file holds.
        When set, ``specs`` are the last good sources, which stay in force."""
        return self.specs.keeping

    def __repr__(self) -> str:
        return f"Snapshot({self.specs.summary}{', keeping' if self.keeping else ''})"


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


class Reporter(Protocol):
    """Told after every read what status and /readyz show about the config: whether one is loaded
    (in force), a message, and why the last good one is kept (``""`` when it is not)."""

    def __call__(self, loaded: bool, message: str, *, keeping: str = "") -> None: ...


def _ignore(loaded: bool, message: str, *, keeping: str = "") -> None:
    return None


@dataclass(frozen=True)
class _Read:
    """One look at the file: its content's digest (None: unreadable) and its sources, or the problem."""

    digest: str | None
    specs: list[EventSourceSpec] | None = None
    problem: str = ""


class FileConfigSource:
    """A ConfigMap YAML (or ``name: config`` mapping) on disk, polled for changes."""

    def __init__(self, path: Path, *, poll_interval: float = 0.5, report: Reporter | None = None) -> None:
        self.path = path
        self.poll_interval = poll_interval
        """Seconds between looks at the file; a stat per look, a read only when it changed."""
        self._report: Reporter = report or _ignore

    def report_to(self, report: Reporter) -> None:
        """Tell ``report`` (the client's status) after every read, a file broken from the start too."""
        self._report = report

    def _stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows symlinks: a swapped ..data link shows as a new inode
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        stamp: tuple[int, int, int, int] | None = (-1, -1, -1, -1)
        last: str | None = ""
        """The digest of the content read last, good or not."""
        good: Snapshot | None = None
        while True:
            now = self._stamp()
            if now != stamp:
                stamp = now
                read = await asyncio.to_thread(self._read)  # parsing a large file must not stall the loop
                if read.digest is None or read.digest != last:
                    last = read.digest
                    snapshot = self._outcome(read, good)
                    if snapshot is not None:
                        good = snapshot if not snapshot.keeping else good
                        yield snapshot
            await asyncio.sleep(self.poll_interval)

    def _read(self) -> _Read:
        origin = str(self.path)
        try:
            raw = read_config_bytes(self.path)
        except OSError as exc:
            return _Read(None, problem=f"cannot read {origin}: {exc.strerror or exc}")
        digest = hashlib.sha256(raw).hexdigest()
        try:
            return _Read(digest, parse_event_sources(raw, origin=origin))
        except EventSourceFileError as exc:
            return _Read(digest, problem=f"{origin}: {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - the watch outlives anything a file holds
            _log.exception("Reading %s failed unexpectedly.", origin)
            return _Read(digest, problem=f"{origin}: cannot be read: {type(exc).__name__}: {exc}")

    def _outcome(self, read: _Read, good: Snapshot | None) -> Snapshot | None:
        """The snapshot ``read`` makes: its sources, the last good ones kept, or none (nothing good yet)."""
        origin = str(self.path)
        if read.specs is not None:
            snapshot = Snapshot(tuple(read.specs), origin)
            _log.info("Loaded %s.", snapshot.specs.summary)
            self._report(True, f"loaded {snapshot.specs.summary}")
            return snapshot
        if good is None:
            _log.warning("No event-source config loaded yet: %s", read.problem)
            self._report(False, f"no event-source config loaded yet: {read.problem}")
            return None
        _log.warning(
            "Keeping the last good event-source config (%d source(s)): %s", len(good.specs), read.problem
        )
        self._report(True, f"keeping the last good config: {read.problem}", keeping=read.problem)
        return Snapshot(good.specs, origin, read.problem)
