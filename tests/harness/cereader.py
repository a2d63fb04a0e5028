"""The JavaScript CloudEvents reader (``cereader/reader.mjs``) as a subscriber for tests.

It reads every POST with the CloudEvents JavaScript SDK, so a test can judge what the gateway client
delivers without the Python SDK the client encodes with. What each record and event holds, and how the
SDK presents data per content type, is written at the top of ``reader.mjs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from tests.harness.processes import (
    READY_TIMEOUT,
    free_port,
    in_ci,
    showing_log_on_failure,
    spawn,
    terminate,
)

READER_DIR = Path(__file__).resolve().parent / "cereader"
SCRIPT = READER_DIR / "reader.mjs"
SDK_PACKAGE = READER_DIR / "node_modules" / "cloudevents" / "package.json"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
"""Seconds a control request to the reader may take."""

Record = dict[str, Any]
"""One POST as the reader saw it: path, headers, body_b64, ok, error, events."""


def node_binary() -> Path | None:
    """``node`` on PATH, if any."""
    found = shutil.which("node")
    return Path(found) if found else None


def require_js_reader() -> Path:
    """The node binary; skips the test when node or the SDK is missing (a failure under ``CI=true``)."""
    node = node_binary()
    if node is None or not SDK_PACKAGE.is_file():
        missing = (
            "no node on PATH" if node is None else f"the cloudevents package is not in {SDK_PACKAGE.parent}"
        )
        message = f"JavaScript CloudEvents reader unavailable ({missing}): run `make install`"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return node


class JsReader:
    """One ``node reader.mjs`` process on a free loopback port, and a client for its control API."""

    def __init__(self, workdir: Path, *, status: int = 200) -> None:
        self.port = free_port()
        self.log_path = workdir / f"cereader-{self.port}.log"
        self._status = status
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: subscribe with this, plus any path."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the reader and wait for its ``ready <port>`` line."""
        if self._proc is not None:
            return
        node = require_js_reader()
        self._proc = await spawn([str(node), str(SCRIPT), str(self.port), str(self._status)], self.log_path)
        self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
        await self._wait_ready(self._proc)

    async def stop(self) -> None:
        """Stop the reader (SIGTERM, then SIGKILL); its records go with it."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._proc is not None:
            proc, self._proc = self._proc, None
            await terminate(proc)

    async def records(self) -> list[Record]:
        """Every POST recorded since the start or the last ``clear``, in arrival order."""
        async with self._client().get(f"{self.url}/records") as response:
            response.raise_for_status()
            records: list[Record] = await response.json()
            return records

    async def events(self) -> list[dict[str, Any]]:
        """The events of every record, in order (a batch request contributes several)."""
        return [event for record in await self.records() for event in record["events"]]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Record]:
        """The records once there are at least ``count`` of them; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            records = await self.records()
            if len(records) >= count:
                return records
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"not within {timeout}s: {count} requests at {self.url} (got {len(records)})"
                )
            await asyncio.sleep(0.02)  # polling another process's state: it sends no notification

    async def clear(self) -> None:
        """Forget every record so far."""
        await self._control("DELETE", "/records")

    async def set_status(self, code: int) -> None:
        """Answer later POSTs with ``code`` (200-599)."""
        await self._control("PUT", f"/status/{code}")

    async def set_body_as(self, kind: Literal["string", "buffer"]) -> None:
        """Hand the SDK later bodies as a UTF-8 string (the default) or as a Buffer (binary-mode bytes)."""
        await self._control("PUT", f"/body/{kind}")

    async def _control(self, method: str, path: str) -> None:
        async with self._client().request(method, f"{self.url}{path}") as response:
            response.raise_for_status()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the JavaScript reader is not started")
        return self._session

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        ready = f"ready {self.port}"
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT:
            if ready in self.log_path.read_text(errors="replace").splitlines():
                return
            if proc.returncode is not None:
                raise RuntimeError(
                    f"the JavaScript reader exited with rc={proc.returncode} before it was ready"
                )
            await asyncio.sleep(0.02)  # polling a log file: nothing to await until the line appears
        raise TimeoutError(f"the JavaScript reader printed no {ready!r} within {READY_TIMEOUT}s")


@contextlib.asynccontextmanager
async def running_js_reader(tmp_path: Path, *, status: int = 200) -> AsyncIterator[JsReader]:
    """A started JavaScript reader writing its log under ``tmp_path``; the log is shown on failure."""
    require_js_reader()
    reader = JsReader(tmp_path, status=status)
    try:
        async with showing_log_on_failure(reader.log_path, f"cereader :{reader.port}"):
            await reader.start()
            yield reader
    finally:
        await reader.stop()
