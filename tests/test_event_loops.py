"""``--loop``: the gateway runs on Python's event loop or on uvloop, chosen per process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common import loops
from common.cli import main
from tests.harness.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def _post_until_answered(url: str, body: bytes, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the route is not bound yet: there is no readiness signal to wait on here


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_webhook_gateway_delivers_and_stops_cleanly_on_either_event_loop(tmp_path: Path, loop: str) -> None:
    port = free_port()
    config = tmp_path / "cm.yaml"
    config.write_text(f'hook: {{endpoint: /hook, method: POST, port: "{port}"}}\n')
    cmd = [sys.executable, "-m", "common.cli", "run", "webhook", "--event-sources", str(config)]
    cmd += ["--ops-port", "-1", "--loop", loop]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            body = json.dumps({"on": loop}).encode()
            assert _post_until_answered(f"http://127.0.0.1:{port}/hook", body) == 200
            event = json.loads(proc.stdout.readline())
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = proc.stderr.read()
    assert event["subject"] == "hook"
    assert event["data"] == {"on": loop}
    assert f"Event loop: {loop}." in log, log
    assert "Traceback" not in log, log


def test_auto_takes_uvloop_when_it_is_installed_and_python_s_loop_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loops, "has_uvloop", lambda: True)
    assert loops.resolve("auto") == "uvloop"
    monkeypatch.setattr(loops, "has_uvloop", lambda: False)
    assert loops.resolve("auto") == "asyncio"
    with pytest.raises(loops.LoopUnavailable, match="uvloop is not installed"):
        loops.resolve("uvloop")


def test_an_unknown_loop_from_the_flag_or_the_variable_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["serve", "calendar", "--loop", "trio"])
    assert usage.value.code == 2
    assert "--loop: 'trio' is not one of auto, asyncio, uvloop" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_LOOP", "tokio")
    with pytest.raises(SystemExit) as usage:
        main(["client", "--event-sources", "x.yaml"])
    assert usage.value.code == 2
    assert "'tokio' is not one of auto, asyncio, uvloop (also $GATEWAY_LOOP)" in capsys.readouterr().err
