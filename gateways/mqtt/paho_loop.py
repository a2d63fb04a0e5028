"""A paho-mqtt client driven by the asyncio event loop: no network thread per source.

paho-mqtt (the design card's client) does the protocol; it tells which sockets to watch
(``on_socket_*``), and the loop calls its ``loop_read``/``loop_write`` when they are ready, and
``loop_misc`` (keep-alive pings, timeouts) every second from one named task. The blocking part of a
connect (name lookup, TCP, a TLS handshake) runs in a worker thread, so no source stalls the others.
A well-kept asyncio wrapper (aiomqtt) does the same, but it cannot hold acknowledgements, which the
gateway needs (``manual_ack``), so paho is used directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from common import tasks
from common.logs import SourceLogger

MISC_INTERVAL = 1.0


class LoopDriver:
    """Watches ``client``'s socket on the running loop; ``stop`` to let go of it."""

    def __init__(self, client: mqtt.Client, logger: SourceLogger, name: str) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._fd = -1
        """The watched socket's descriptor, kept: a closed socket says -1."""
        self._writing = False
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        self._misc = tasks.start(
            self._tick(), name=f"MQTT keep-alive of event source {name!r}", logger=logger
        )

    def _now_or_soon(self, call: Callable[..., None], *args: Any) -> None:
        """Run ``call`` at once on the loop's own thread (paho is closing a socket: the watch must go
        before the descriptor does), else hand it to the loop (a connect runs in a worker thread)."""
        if threading.get_ident() == self._thread:
            call(*args)
        else:
            self.loop.call_soon_threadsafe(call, *args)

    def _opened(self, client: mqtt.Client, userdata: Any, sock: socket.socket | Any) -> None:
        self._now_or_soon(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        fd = sock.fileno()
        if fd < 0:
            return  # closed before the loop got to it (a connect that failed)
        self._fd = fd
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._now_or_soon(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if not self._writing and self._fd >= 0:
            self._writing = True
            self.loop.add_writer(self._fd, self._write)

    def _done_writing(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._now_or_soon(self._remove_writer, sock)

    def _remove_writer(self, sock: Any = None) -> None:
        if self._writing:
            self._writing = False
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_writer(self._fd)

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._now_or_soon(self._forget, sock)

    def _forget(self, sock: Any = None) -> None:
        if self._fd >= 0:
            self._remove_writer()
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self._fd)
            self._fd = -1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL)
            self.client.loop_misc()

    def stop(self) -> None:
        """Stop the keep-alive task and the watching (the loop stops the task at its next turn)."""
        self._misc.cancel()
        self._forget()
