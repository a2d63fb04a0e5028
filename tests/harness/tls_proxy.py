"""A TLS-terminating TCP proxy for brokers the tests run without TLS: clients speak TLS to the proxy,
which pipes the plaintext bytes to the broker and back, unchanged. For protocols whose clients dial
only the address they were given (AMQP, MQTT); Kafka's clients follow the broker's advertised
address, so Kafka has a protocol-aware proxy of its own (``kafka_proxy``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

from tests.harness.processes import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.close()


class TlsProxy:
    """Listens with TLS on ``port``; each connection goes to ``127.0.0.1:<target>`` in plaintext."""

    def __init__(self, target: int, context: ssl.SSLContext) -> None:
        self.target = target
        self.context = context
        self.port = free_port()
        self.handshake_failures = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.ensure_future(_pipe(reader, upstream_writer)),
            asyncio.ensure_future(_pipe(upstream_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
            self._pipes.discard(pipe)
        for end in (writer, upstream_writer):
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                end.close()

    def _count_failure(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if isinstance(context.get("exception"), ssl.SSLError):
            self.handshake_failures += 1
            return
        loop.default_exception_handler(context)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._count_failure)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pipe in list(self._pipes):
            pipe.cancel()
        for writer in list(self._writers):  # TLS sockets closed before the loop goes, not by the GC
            with contextlib.suppress(ConnectionError, OSError, RuntimeError, TimeoutError, ssl.SSLError):
                writer.close()
                async with asyncio.timeout(1):
                    await writer.wait_closed()


@contextlib.asynccontextmanager
async def tls_proxy(target: int, context: ssl.SSLContext) -> AsyncIterator[TlsProxy]:
    proxy = TlsProxy(target, context)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
