"""The images as a container engine builds and runs them, through ``docker/engine.sh`` as ``make images``.

``engine_or_skip`` finds the engine (``docker`` with a daemon that answers, else ``podman``) and the
base image (``python:3.11-slim`` where a registry has it, else a local Debian one made once with
mmdebstrap), or skips saying why (a failure under ``CI=true``). ``Engine.build`` builds one
``docker/<kind>.Dockerfile``, reusing the engine's layer cache. ``Engine.start`` runs an image
attached (``run --rm``), its output appended to a log file, with the host's network, so a server
listening on loopback in the container is reachable on the host's loopback (as the two containers
of a pod share theirs). ``Container.stop`` is ``<engine> stop -t``: SIGTERM, then SIGKILL after the
timeout; the exit code is the container's.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness.brokers_base import launch
from tests.harness.processes import READY_TIMEOUT, dump_log, in_ci

ROOT = Path(__file__).resolve().parent.parent.parent
ENGINE_SH = ROOT / "docker" / "engine.sh"
KINDS = sorted(p.name.removesuffix(".Dockerfile") for p in (ROOT / "docker").glob("*.Dockerfile"))
"""Every image: one per gateway kind and ``client``."""
NAMESPACE = "localhost/gateways-test"
"""Image names of the tests' builds (``make images`` tags ``gateways/<kind>``; the layers are shared)."""
BUILD_TIMEOUT = 600.0
"""Seconds one build may take: a cold one installs the dependencies from the registry."""
START_TIMEOUT = 30.0
"""Seconds a container may take to log that it serves (about 1 s on a warm engine)."""


def _sh(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENGINE_SH), *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


@dataclass
class Engine:
    """The engine ``docker/engine.sh`` picked, and the base image it builds on."""

    name: str
    base: str
    containers: list[str] = field(default_factory=list)

    def image(self, kind: str) -> str:
        return f"{NAMESPACE}/{kind}:latest"

    def build(self, kind: str, log: Path) -> float:
        """Build ``docker/<kind>.Dockerfile`` as ``image(kind)``; seconds taken. Fails showing the log."""
        started = time.monotonic()
        with log.open("ab") as out:
            proc = subprocess.run(
                [str(ENGINE_SH), "build", kind, self.image(kind)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
                cwd=ROOT,
            )
        if proc.returncode != 0:
            dump_log(log, f"{self.name} build of {kind}")
            pytest.fail(f"{self.name} build of docker/{kind}.Dockerfile failed (rc={proc.returncode})")
        return time.monotonic() - started

    def exec(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the engine with ``args``; its completed process (output as text)."""
        return _sh("exec", *args, timeout=timeout)

    def start(
        self,
        kind: str,
        args: Sequence[str],
        log: Path,
        *,
        volumes: Sequence[str] = (),
        entrypoint: str | None = None,
    ) -> Container:
        """Run ``image(kind)`` with ``args`` attached, with the host's network; the container."""
        name = f"gateways-test-{kind}-{time.monotonic_ns()}"
        self.containers.append(name)
        cmd = [str(ENGINE_SH), "exec", "run", "--rm", "--name", name, "--network", "host"]
        for volume in volumes:
            cmd += ["--volume", volume]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint]
        return Container(self, name, log, launch([*cmd, self.image(kind), *args], log, cwd=ROOT))

    def remove_all(self) -> None:
        """Remove every container ``start`` made that is still there (a test that failed midway)."""
        if self.containers:
            self.exec("rm", "--force", "--ignore", *self.containers)


@dataclass
class Container:
    """One running container, its ``run`` process and its log."""

    engine: Engine
    name: str
    log: Path
    proc: subprocess.Popen[bytes]

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until the log holds ``needle``; fails showing the log if the container exits first."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                dump_log(self.log, self.name)
                pytest.fail(f"{self.name} exited (rc={self.proc.returncode}) before logging {needle!r}")
            if time.monotonic() > deadline:
                dump_log(self.log, self.name)
                pytest.fail(f"{self.name} did not log {needle!r} within {timeout}s")
            time.sleep(0.05)  # a log file sends no event to await

    def stop(self, timeout: int = 10) -> int:
        """``<engine> stop -t timeout``: SIGTERM, SIGKILL after ``timeout`` s; the container's exit code."""
        self.engine.exec("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return self.proc.wait(timeout=30)


def health(port: int, timeout: float = READY_TIMEOUT) -> int:
    """The gRPC health status of the server on 127.0.0.1:``port``, asked until it answers."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # nothing listens yet: nothing to await
                continue
            status: int = reply.status
            return status


def engine_or_skip() -> Engine:
    """The engine and base image, or a skip naming what is missing (a failure under ``CI=true``)."""
    which = _sh("which")
    reason = ""
    if which.returncode != 0:
        missing = which.stderr.strip().removeprefix("engine: ")
        reason = f"no container engine: {missing} (`make engine` installs podman as root with apt-get)"
    else:
        base = _sh("base", timeout=BUILD_TIMEOUT)
        if base.returncode != 0:
            reason = f"{which.stdout.strip()} has no base image to build on: {base.stderr.strip()}"
    if reason:
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return Engine(which.stdout.strip(), base.stdout.strip())
