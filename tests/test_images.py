"""The images, really built and run: every ``docker/*.Dockerfile`` built by the engine ``make images`` uses
(``docker`` with a daemon that answers, else ``podman``), through ``docker/engine.sh``.

- the calendar server image serves the host's own ``gateway client``, which receives its events; a
  ``stop -t`` gives the server SIGTERM while the source runs, and it drains and stops in stages, exit 0;
- the client image answers ``--version`` as the host's install does, and receives the events of a
  calendar server image beside it (both with the host's network: one loopback, as in a pod);
- every kind's server image starts ``gateway serve <kind>``, logs that it serves, answers gRPC health
  SERVING, and stops cleanly on SIGTERM.

Without an engine (no Docker daemon, and podman not installed: ``make engine`` installs it as root with
apt-get) these skip saying why; under ``CI=true`` they fail. Measured on the project's 2-core machine with
podman: from empty engine storage this module takes about 2 min 10 s, nearly all of it building (the
local mmdebstrap base about 50 s, made once and cached; then pip installing the dependencies, once for
the shared layer and once for the nats image's extra); with the layers cached, about 16 s. A change to
``pyproject.toml``, ``README.md``, ``proto/``, ``common/`` or ``gateways/`` reruns the pip layers: 1.5 to
2.5 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.harness.brokers_base import launch
from tests.harness.images import KINDS, Engine, engine_or_skip, health
from tests.harness.processes import dump_log, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SERVER_KINDS = [k for k in KINDS if k != "client"]
GATEWAY = Path(sys.executable).parent / "gateway"
TICKS = "tick:\n  interval: 200ms\n  userPayload: {n: 1}\n"
"""An event-source file: one calendar source firing five times a second."""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The engine, with every image built once for the module (the engine's layer cache reused)."""
    found = engine_or_skip()
    logs = tmp_path_factory.mktemp("image-builds")
    for kind in KINDS:
        found.build(kind, logs / f"{kind}.log")
    yield found
    found.remove_all()


def _events(path: Path) -> list[dict[str, object]]:
    """The CloudEvents (JSON lines) in an output file."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _wait_for_events(path: Path, proc: subprocess.Popen[bytes], count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(_events(path)) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            dump_log(path, "client")
            pytest.fail(f"fewer than {count} events (client rc={proc.poll()})")
        time.sleep(0.05)  # a file sends no event to await


def _in_order(log: str, stages: list[str]) -> None:
    positions = [log.find(stage) for stage in stages]
    assert -1 not in positions and positions == sorted(positions), log


def test_the_calendar_image_serves_the_hosts_client_and_stops_in_stages_on_sigterm(
    engine: Engine, tmp_path: Path
) -> None:
    port = free_port()
    server = engine.start("calendar", ["--port", str(port)], tmp_path / "server.log")
    server.wait_for_log(f"Serving the calendar gateway on 127.0.0.1:{port}")
    config = tmp_path / "sources.yaml"
    config.write_text(TICKS)
    out = tmp_path / "client.out"
    client_cmd = [str(GATEWAY), "client", "--server", f"127.0.0.1:{port}", "--event-sources", str(config)]
    client = launch([*client_cmd, "--kind", "calendar", "--ops-port", "-1"], out)
    try:
        _wait_for_events(out, client, 2)
        event = _events(out)[0]
        assert (event["type"], event["subject"]) == ("calendar", "tick")
        assert isinstance(event["data"], dict) and event["data"]["userPayload"] == {"n": 1}
        assert server.stop(timeout=10) == 0
    finally:
        client.terminate()
        client.wait(timeout=30)
    _in_order(
        server.text(),
        [
            "Received SIGTERM",
            "Shutting down: refusing new streams; draining 1 running event source(s)",
            "Every event source has drained.",
            "The calendar gateway server has stopped.",
        ],
    )


def test_the_client_image_answers_its_version_and_receives_a_server_images_events(
    engine: Engine, tmp_path: Path
) -> None:
    version = engine.exec("run", "--rm", "--entrypoint", "gateway", engine.image("client"), "--version")
    host = subprocess.run([str(GATEWAY), "--version"], capture_output=True, text=True, check=True, timeout=30)
    assert (version.returncode, version.stdout) == (0, host.stdout), version.stderr

    port = free_port()
    server = engine.start("calendar", ["--port", str(port)], tmp_path / "server.log")
    server.wait_for_log("Serving the calendar gateway")
    config = tmp_path / "sources.yaml"
    config.write_text(TICKS)
    config.chmod(0o644)  # the image's user (65532) reads it
    args = ["--event-sources", "/config/sources.yaml", "--server", f"127.0.0.1:{port}", "--kind", "calendar"]
    out = tmp_path / "client.log"
    client = engine.start(
        "client", [*args, "--ops-port", str(free_port())], out, volumes=[f"{config}:/config/sources.yaml:ro"]
    )
    _wait_for_events(out, client.proc, 2)
    assert {e["subject"] for e in _events(out)} == {"tick"}
    assert client.stop(timeout=15) == 0
    _in_order(client.text(), ["Received SIGTERM", "draining the event sources", "client has stopped"])
    assert server.stop(timeout=10) == 0


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_every_kinds_image_serves_answers_health_and_stops_cleanly(
    engine: Engine, kind: str, tmp_path: Path
) -> None:
    port = free_port()
    server = engine.start(kind, ["--port", str(port)], tmp_path / "server.log")
    server.wait_for_log(f"Serving the {kind} gateway on 127.0.0.1:{port}")
    assert health(port) == health_pb2.HealthCheckResponse.SERVING
    assert server.stop(timeout=10) == 0
    _in_order(server.text(), ["Received SIGTERM", "Shutting down", f"The {kind} gateway server has stopped."])
