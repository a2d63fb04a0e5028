"""Delivery with no subscriber: each CloudEvent printed as one JSON line (structured mode).

The line is the structured body as a subscriber gets it, byte for byte but for line breaks: in JSON
a raw line break can only be whitespace between tokens (never inside a string), so it becomes a space
and the event stays one line, its payload's own text untouched (``1e400`` stays ``1e400``). When
stdout is closed (``gateway run ... | head -1``) the process stops as on SIGTERM, once, quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any, TextIO

from common.client.cloudevent import encode
from common.client.metrics import EVENTS_DELIVERED, EVENTS_DROPPED
from common.client.model import Format, GatewayIdentity, ReceivedEvent

STDOUT = "stdout"
_log = logging.getLogger(__name__)


class Printer:
    """Writes every event to ``out`` as one line of structured-mode CloudEvent JSON."""

    def __init__(self, gateway: GatewayIdentity, out: TextIO) -> None:
        self._gateway = gateway
        self._out = out
        self._printed = 0
        self._closed = False

    async def start(self) -> None:
        return None

    async def publish(self, received: ReceivedEvent) -> None:
        if self._closed:
            self._drop(received)
            return
        message = encode(received, self._gateway, Format.STRUCTURED)
        line = message.body.replace(b"\r", b" ").replace(b"\n", b" ").decode("utf-8")
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):  # the reader has gone (``| head``), or stdout was closed
            self._stdout_closed()
            self._drop(received)
            return
        self._printed += 1
        EVENTS_DELIVERED.labels(source=received.source, subscriber=STDOUT).inc()
        if received.receipt is not None:
            received.receipt.settle()

    def _drop(self, received: ReceivedEvent) -> None:
        EVENTS_DROPPED.labels(source=received.source, subscriber=STDOUT, reason="shutdown").inc()
        if received.receipt is not None:
            received.receipt.abandon()

    def _stdout_closed(self) -> None:
        self._closed = True
        _log.warning("stdout was closed; no more events can be printed: stopping.")
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches the closed pipe, not even
            devnull = os.open(os.devnull, os.O_WRONLY)  # the interpreter's last flush
            os.dup2(devnull, self._out.fileno())
            os.close(devnull)
        os.kill(os.getpid(), signal.SIGTERM)

    async def remove_source(self, source: str, grace: float) -> None:
        return None

    async def close(self, grace: float) -> None:
        if not self._closed:
            try:
                self._out.flush()
            except (BrokenPipeError, ValueError):
                self._closed = True

    def status(self) -> list[dict[str, Any]]:
        return [{"subscriber": STDOUT, "delivered": self._printed}]
