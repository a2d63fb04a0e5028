"""Raw HTTP/1.1 over a socket, for what an HTTP client library will not send: malformed requests,
bodies that stop half-way, ``Expect: 100-continue`` with a pause."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

READ_TIMEOUT = 5.0
"""Seconds a response may take to arrive."""


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, timeout: float = READ_TIMEOUT) -> RawResponse:
    """One response: status line, headers (names lower-cased) and a ``Content-Length`` body."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return RawResponse(int(status_line.split()[1]), headers, body)


async def exchange(port: int, data: bytes, timeout: float = READ_TIMEOUT) -> RawResponse | None:
    """Send ``data`` and read one response; None when the server closes without answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            return await read_response(reader, timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
    finally:
        writer.close()
        await writer.wait_closed()


def post(
    path: str, body: bytes = b"", headers: dict[str, str] | None = None, *, length: int | None = None
) -> bytes:
    """A POST request's bytes; ``length`` overrides the declared ``Content-Length``."""
    fields = {"Host": "127.0.0.1", "Content-Length": str(len(body) if length is None else length)}
    fields.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body
