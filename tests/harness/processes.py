"""Child-process servers for tests, after nats-server's own harness.

A server gets a free port on 127.0.0.1, dies with the test process (``PR_SET_PDEATHSIG``), writes to a
log file, counts as ready when its port accepts a TCP connection, and is stopped terminate -> wait ->
kill. When the body of ``running`` fails, the server's log is printed so the failure shows its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 10.0
"""Seconds a server may take to accept connections; measured start-up is about 0.02 s."""
STOP_TIMEOUT = 5.0
"""Seconds between SIGTERM and SIGKILL."""


_HANDED_OUT: set[int] = set()
"""Ports this test run was given already: the kernel may hand a closed one out again at once, and two
servers of one test on one port answer each other's requests."""


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, never one this run was given before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the process that forked it dies (no orphaned servers)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(cmd: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start ``cmd`` in its own session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


async def wait_tcp(port: int, proc: asyncio.subprocess.Process, timeout: float = READY_TIMEOUT) -> float:
    """Wait until 127.0.0.1:``port`` accepts a connection; seconds taken. Fails if ``proc`` exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with rc={proc.returncode} before accepting connections")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)  # polling a port: nothing to await until it opens
            continue
        writer.close()
        await writer.wait_closed()
        return time.monotonic() - started
    raise TimeoutError(f"nothing accepted connections on port {port} within {timeout}s")


async def terminate(proc: asyncio.subprocess.Process, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return await proc.wait()


def dump_log(log_path: Path, title: str) -> None:
    """Print a server's log to stderr, where pytest shows it next to the failure."""
    text = log_path.read_text(errors="replace") if log_path.exists() else "(no log)"
    print(f"\n----- {title} log ({log_path}) -----\n{text}----- end of {title} log -----", file=sys.stderr)


@contextlib.asynccontextmanager
async def showing_log_on_failure(log_path: Path, title: str) -> AsyncIterator[None]:
    """Dump ``log_path`` if the body raises (a failed test, or a server that never became ready)."""
    try:
        yield
    except BaseException:
        dump_log(log_path, title)
        raise


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, what: str, timeout: float = 10.0
) -> None:
    """Poll ``predicate`` until it holds, for state that sends no notification (a stream's count)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if result if isinstance(result, bool) else await result:
                    return
                await asyncio.sleep(0.01)  # polling state that offers no event to await
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing server binary is a failure, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


async def run_to_end(
    cmd: Sequence[str], cwd: Path | None = None, timeout: float = 30.0
) -> tuple[int, str, str]:
    """Run ``cmd`` to its end (a CLI call such as ``gateway validate``): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
