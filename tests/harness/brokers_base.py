"""What every test broker shares: a child process on a free port, a protocol-level ready check, restarts.

A ``Broker`` runs one server binary as a child process in its own session that gets SIGTERM when the
test run dies (``PR_SET_PDEATHSIG``, as ``processes.spawn`` does), its output appended to ``log_path``.
It is a plain ``subprocess.Popen`` rather than an asyncio one, so a broker started in one event loop
can be stopped from another (RabbitMQ's node is shared by tests that each run in their own loop).

``start`` counts the broker as ready when it answers its own protocol (``probe``), not when its port
merely opens; ``stop`` sends the broker's stop signal, waits for the exit (a pidfd, no polling), then
SIGKILLs whatever is left of its process group. ``start`` again reuses the port and the data directory.
``connections`` counts the established TCP connections to the port, from ``/proc/net/tcp{,6}``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

import pytest

from tests.harness.processes import (
    PR_SET_PDEATHSIG,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    free_port,
    in_ci,
    showing_log_on_failure,
)

PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
TCP_ESTABLISHED = "01"
"""The ``st`` column of ``/proc/net/tcp`` for an established connection."""
PROBE_TIMEOUT = 2.0
"""Seconds one readiness probe may take before it counts as a failed attempt."""
RETRY_INTERVAL = 0.02
"""Seconds between readiness probes: a closed port sends no event to await."""

B = TypeVar("B", bound="Broker")


def connection_count(port: int) -> int:
    """Established TCP connections whose local port is ``port``: the server side of each client's socket.

    Read from ``/proc/net/tcp`` and ``/proc/net/tcp6`` (this network namespace), so it counts every
    client on this host, whatever opened it, and needs nothing from the broker itself.
    """
    count = 0
    for table in PROC_NET_TCP:
        try:
            rows = table.read_text().splitlines()[1:]
        except FileNotFoundError:  # a kernel without IPv6
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            if state == TCP_ESTABLISHED and int(local.rpartition(":")[2], 16) == port:
                count += 1
    return count


def require(binary: Path | None, reason: str) -> Path:
    """``binary``, or skip the test with ``reason`` when it is missing (a failure under ``CI=true``)."""
    if binary is None:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that forked it dies (no orphaned brokers)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(
    cmd: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, dying with this process, its output appended to ``log_path``.

    ``setpriv --pdeathsig`` sets the parent-death signal when it is there: Python code run between
    fork and exec (``preexec_fn``) can crash the child of a process whose gRPC threads are busy."""
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*prefix, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=None if setpriv else _die_with_parent,
        )


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` for ``proc`` to exit, on its pidfd; True when it has (it is then reaped)."""
    if proc.poll() is not None:
        return True
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = os.pidfd_open(proc.pid)

    def exit_seen() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, exit_seen)
    try:
        async with asyncio.timeout(timeout):
            await readable
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of ``proc``'s process group (its session's children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def halt(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL the process group; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        if not await exited(proc, timeout):
            _kill_group(proc)
    code = proc.wait()
    _kill_group(proc)
    return code


def halt_now(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int:
    """``halt`` without an event loop, for clean-up at interpreter exit."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
    code = proc.wait()
    _kill_group(proc)
    return code


class Broker(abc.ABC):
    """One broker process on a fixed free port; ``stop`` and ``start`` keep the port and the data dir."""

    name: ClassVar[str]
    """The broker's name in logs and messages (``mosquitto``)."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    ready_timeout: ClassVar[float] = READY_TIMEOUT

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.ready_seconds: float | None = None
        """How long the last ``start`` took, from launch to the first good probe."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The address a client of this protocol is configured with."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The broker's command line."""

    def environment(self) -> dict[str, str] | None:
        """The broker's environment; None inherits this process's."""
        return None

    @abc.abstractmethod
    async def probe(self) -> None:
        """One protocol-level check that the broker serves clients; raises when it does not (yet)."""

    @property
    def running(self) -> bool:
        """True between a ``start`` and the next ``stop`` (or the broker's own exit)."""
        return self._proc is not None and self._proc.poll() is None

    def connections(self) -> int:
        """Established client connections to this broker's port right now."""
        return connection_count(self.port)

    async def start(self) -> None:
        """Start the broker (again, on the same port and data) and wait until it answers its protocol.

        Does nothing while it runs; after the broker's own exit (a crash), starts it again.
        """
        if self.running:
            return
        started = time.monotonic()
        self._proc = launch(self.command(), self.log_path, env=self.environment(), cwd=self.workdir)
        self.ready_seconds = await self._until_ready(self._proc, started)

    async def stop(self) -> None:
        """Stop the broker (its stop signal, then SIGKILL); its data stays for the next ``start``."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            await halt(proc, self.stop_signal)

    async def close(self) -> None:
        """Stop the broker for good: ``stop`` plus whatever else it runs beside itself."""
        await self.stop()

    def close_now(self) -> None:
        """``close`` without an event loop, for clean-up at interpreter exit."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            halt_now(proc, self.stop_signal)

    async def _until_ready(self, proc: subprocess.Popen[bytes], started: float) -> float:
        last_error: BaseException | None = None
        while time.monotonic() - started < self.ready_timeout:
            if proc.poll() is not None:
                await self.stop()  # reaps it and whatever it left in its process group
                raise RuntimeError(f"{self.name} exited with rc={proc.returncode} before it was ready")
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self.probe()
            except (OSError, EOFError, TimeoutError, ValueError, struct.error) as error:  # not serving yet
                last_error = error
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            return time.monotonic() - started
        await self.stop()
        raise TimeoutError(
            f"{self.name} on port {self.port} did not answer its protocol within {self.ready_timeout}s"
            f" (last probe: {last_error!r})"
        )


@contextlib.asynccontextmanager
async def running(make: Callable[[Path], B]) -> AsyncIterator[B]:
    """A started broker in a fresh temp dir, its log printed if the body fails; closed and removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="broker-"))
    try:
        broker = make(workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        async with showing_log_on_failure(broker.log_path, f"{broker.name} :{broker.port}"):
            await broker.start()
            yield broker
    finally:
        await broker.close()
        shutil.rmtree(workdir, ignore_errors=True)
