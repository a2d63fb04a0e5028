"""Delivery with no subscriber: each CloudEvent printed as one JSON line (structured mode)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from common.client.cloudevent import encode
from common.client.metrics import EVENTS_DELIVERED
from common.client.model import Format, GatewayIdentity, ReceivedEvent

STDOUT = "stdout"


class Printer:
    """Writes every event to ``out`` as one line of structured-mode CloudEvent JSON."""

    def __init__(self, gateway: GatewayIdentity, out: TextIO) -> None:
        self._gateway = gateway
        self._out = out
        self._printed = 0

    async def start(self) -> None:
        return None

    async def publish(self, received: ReceivedEvent) -> None:
        message = encode(received, self._gateway, Format.STRUCTURED)
        line = json.dumps(json.loads(message.body), ensure_ascii=False, separators=(",", ":"))
        self._out.write(line + "\n")
        self._out.flush()
        self._printed += 1
        EVENTS_DELIVERED.labels(source=received.source, subscriber=STDOUT).inc()
        if received.receipt is not None:
            received.receipt.settle()

    async def remove_source(self, source: str, grace: float) -> None:
        return None

    async def close(self, grace: float) -> None:
        self._out.flush()

    def status(self) -> list[dict[str, Any]]:
        return [{"subscriber": STDOUT, "delivered": self._printed}]
