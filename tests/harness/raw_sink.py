"""A subscriber that parses HTTP by hand (no HTTP library between the wire and the test), answering
each POST with a status and delay the test sets; and two small helpers the outside checks share."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from tests.harness.processes import free_port


@dataclass(frozen=True)
class Arrival:
    """One POST the sink answered 2xx: its headers (names lower-cased, values as sent) and body."""

    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")

    def ce(self, name: str) -> str | None:
        """A ``ce-`` attribute, percent-decoded as the CloudEvents HTTP binding says."""
        raw = self.headers.get(f"ce-{name}")
        return None if raw is None else urllib.parse.unquote(raw)


@dataclass
class RawSink:
    """HTTP/1.1 on bare asyncio streams. ``status`` and ``delay`` are read per request; only POSTs
    answered 2xx are kept in ``arrivals`` (what the subscriber accepted)."""

    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    refused: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> RawSink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=1 << 26)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def reopen(self) -> None:
        await self.__aenter__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def ids(self) -> list[str]:
        return [a.id for a in self.arrivals]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[str, str] = {}
                for line in head.split(b"\r\n")[1:]:
                    if line:
                        name, _, value = line.partition(b":")
                        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
                size = int(headers.get("content-length", "0"))
                body = await reader.readexactly(size) if size else b""
                if self.delay:
                    await asyncio.sleep(self.delay)  # the subscriber's own work
                status = self.status
                if 200 <= status < 300:
                    self.arrivals.append(Arrival(headers, body))
                else:
                    self.refused += 1
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        return await answer.text()


async def run(cmd: Sequence[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
