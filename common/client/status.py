"""Per-source status in one place: what ``/readyz`` shows and what the cluster side writes to
``Gateway.status.nodes``. Phases are v0.11's node phases; a removed source's node is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from common.client.metrics import SOURCES


class Phase(StrEnum):
    """v0.11's ``NodePhase`` values."""

    NEW = ""
    RUNNING = "Running"
    ERROR = "Error"
    COMPLETED = "Completed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class NodeStatus:
    """One event source's node (the ``Gateway.status.nodes`` fields, plus counters)."""

    id: str
    name: str
    phase: Phase = Phase.NEW
    message: str = ""
    started_at: str = ""
    updated_at: str = field(default_factory=_now)
    last_event_at: str = ""
    events: int = 0
    restarts: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["phase"] = self.phase.value
        out["displayName"] = self.name
        return out


class StatusBoard:
    """The client's state: config loaded, server connected, and every source's node."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeStatus] = {}
        self.config_loaded = False
        self.config_message = ""
        self.config_keeping = ""
        self.config_problem = ""
        """Why the config's current content is not what runs (kept, or not loaded yet)."""
        self.server_connected = False
        self._changed = asyncio.Event()

    def set_phase(self, name: str, source_id: str, phase: Phase, message: str) -> None:
        """Move ``name`` to ``phase``; the node is created if it does not exist yet."""
        node = self.nodes.get(name)
        if node is None or node.id != source_id:
            node = self.nodes[name] = NodeStatus(id=source_id, name=name)
        if phase is Phase.RUNNING and node.phase is not Phase.RUNNING:
            node.started_at = _now()
        node.phase, node.message, node.updated_at = phase, message, _now()
        self._bump()

    def count_restart(self, name: str) -> None:
        if name in self.nodes:
            self.nodes[name].restarts += 1

    def event(self, name: str, count: int = 1) -> None:
        """Count ``count`` events of ``name`` (cheap: no notification)."""
        node = self.nodes.get(name)
        if node is not None:
            node.events += count
            node.last_event_at = _now()

    def remove(self, name: str) -> None:
        """Delete the node of a removed source."""
        if self.nodes.pop(name, None) is not None:
            self._bump()

    def config(self, loaded: bool, message: str, *, keeping: str = "") -> None:
        """The config's state. ``loaded`` once a good config was ever loaded, and it stays so: the last
        good config stays in force when the file breaks; ``keeping`` then says why the file's current
        content was refused (``""``: the file's content is what runs)."""
        self.config_loaded = self.config_loaded or loaded
        self.config_message = message
        self.config_keeping = keeping
        self.config_problem = keeping or ("" if loaded else message)
        self._bump()

    def connected(self, up: bool) -> None:
        if up != self.server_connected:
            self.server_connected = up
            self._bump()

    @property
    def ready(self) -> bool:
        """Config loaded and server connected: one failed source does not take the pod out of service."""
        return self.config_loaded and self.server_connected

    def snapshot(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "config": {
                "loaded": self.config_loaded,
                "message": self.config_message,
                "keeping_last_good": bool(self.config_keeping),
                "problem": self.config_problem,
            },
            "server": {"connected": self.server_connected},
            "nodes": {name: node.to_dict() for name, node in sorted(self.nodes.items())},
        }

    def _bump(self) -> None:
        for phase in Phase:
            SOURCES.labels(phase=phase.value or "New").set(
                sum(1 for n in self.nodes.values() if n.phase is phase)
            )
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[StatusBoard], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate(self)`` holds (for readiness checks and tests); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()
