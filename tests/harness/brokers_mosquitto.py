"""mosquitto (MQTT) for tests: Debian's 2.0 broker on 127.0.0.1, its retained and queued messages kept.

The broker runs from a config written into its work dir: one listener on ``127.0.0.1:<port>``,
anonymous clients, persistence to ``mosquitto.db`` there (saved on SIGTERM, read on the next start),
and its log to stderr (unbuffered, so the log is whole when a failing test prints it). Run as root,
mosquitto would drop to user ``mosquitto`` and then fail to write a root-owned dir, so as root the
config says ``user root``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

from tests.harness.brokers_base import Broker
from tests.harness.brokers_mqtt import mqtt_ready

DEBIAN_BINARY = Path("/usr/sbin/mosquitto")
MISSING = "no mosquitto binary: install Debian's mosquitto (`make brokers` does, as root)"


def mosquitto_binary() -> Path | None:
    """mosquitto on PATH, else Debian's ``/usr/sbin/mosquitto``."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.is_file() else None


class Mosquitto(Broker):
    """One mosquitto process; ``stop`` and ``start`` keep its port, retained messages and sessions."""

    name: ClassVar[str] = "mosquitto"

    @property
    def url(self) -> str:
        """``tcp://127.0.0.1:<port>``, as MQTT clients (and the gateway's config) write it."""
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """The config file the broker reads."""
        return self.workdir / "mosquitto.conf"

    def command(self) -> list[str]:
        """Write the config (see the module's docstring), then ``mosquitto -c`` it."""
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            "log_dest stderr",
            *(f"log_type {kind}" for kind in ("error", "warning", "notice", "information")),  # one a line
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")
        return [str(self.binary), "-c", str(self.config_path)]

    async def probe(self) -> None:
        """An MQTT ``CONNECT`` answered by an accepting ``CONNACK``."""
        await mqtt_ready(self.port)
