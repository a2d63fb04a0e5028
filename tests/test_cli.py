"""The ``gateway`` command as a person or a container runs it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common import cli
from common.cli import main
from tests.harness.processes import free_port, spawn, terminate, wait_until

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cm.yaml"
    path.write_text(text)
    return path


def test_validate_prints_ok_per_key_and_exits_0_when_all_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "a: {interval: 10s}\nb: {schedule: '*/5 * * * *'}\n")
    assert main(["validate", "calendar", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["OK      a", "OK      b"]


def test_validate_prints_the_reasons_and_exits_1_when_any_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "good: {interval: 10s}\nbad: {interval: ten, timezone: Mars/Olympus}\n")
    assert main(["validate", "calendar", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "OK      good"
    assert out[1].startswith("INVALID bad: ")
    assert "event source 'bad' is invalid" not in out[1], "the key is named once"
    assert "interval:" in out[1]
    assert "timezone:" in out[1]


def test_validate_checks_the_configmap_version_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = "{argo-events-event-source-version: v0.12}"
    text = f"kind: ConfigMap\nmetadata:\n  labels: {labels}\ndata:\n  a: 'interval: 1s'\n"
    assert main(["validate", "calendar", str(write(tmp_path, text))]) == 1
    assert "version: gateway expects v0.10" in capsys.readouterr().out


def test_validate_exits_1_on_a_file_that_is_not_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "calendar", str(write(tmp_path, "a: [unclosed"))]) == 1
    assert "not valid YAML" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["validate", "calendar", "/nonexistent/cm.yaml"], ["validate", "nosuchkind", "x.yaml"], ["serve"], []],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2


def test_serve_ends_with_exit_code_0_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, GATEWAY_SERVER_PORT="0")
    cmd = [sys.executable, "-m", "common.cli", "serve", "calendar"]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # readiness is the log line, not a sleep
            if "Serving the calendar gateway" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=15) == 0
    assert "Received SIGTERM" in rest
    assert rest.index("Shutting down") < rest.index("has stopped")


def test_serve_refuses_a_malformed_port_variable_naming_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "common.cli", "serve", "calendar"],
        cwd=ROOT,
        env=dict(os.environ, GATEWAY_SERVER_PORT="ninety"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "GATEWAY_SERVER_PORT" in proc.stderr


def test_run_prints_cloudevents_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text("tick:\n  interval: 100ms\n  userPayload: {n: 1}\n")
    cmd = [sys.executable, "-m", "common.cli", "run", "calendar", "--event-sources", str(config)]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]  # blocks until each event is printed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = proc.stderr.read()
    assert [e["subject"] for e in lines] == ["tick"] * 3
    assert {e["type"] for e in lines} == {"calendar"}
    assert {e["source"] for e in lines} == {"calendar-gateway"}
    assert all(e["data"]["userPayload"] == {"n": 1} for e in lines)
    stages = [
        "Received SIGTERM",
        "draining the event sources",
        "Event sources drained; delivering",
        "Delivery stopped",
        "client has stopped",
        "server has stopped",
    ]
    positions = [log.index(stage) for stage in stages]
    assert positions == sorted(positions), log


async def test_serve_exposes_the_kinds_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    import aiohttp

    from tests.harness.processes import free_port, spawn, terminate, wait_until

    grpc_port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "common.cli", "serve", "webhook", "--port", str(grpc_port)]
    server = await spawn([*cmd, "--metrics-port", str(metrics_port)], tmp_path / "server.log")
    try:
        async with aiohttp.ClientSession() as http:

            async def metrics_served() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                        return resp.status == 200 and "webhook_responses" in await resp.text()
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(metrics_served, what="the webhook metrics served")
    finally:
        assert await terminate(server) == 0


@pytest.mark.parametrize("argv", [["serve", "calendar", "--gc", "lazy"], ["run", "calendar", "--gc", "lazy"]])
def test_an_unknown_gc_policy_is_a_usage_error_naming_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2
    assert "--gc: 'lazy' is not one of paced, python" in capsys.readouterr().err


def test_the_gc_policy_variable_is_read_when_no_flag_is_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_GC", "sometimes")
    with pytest.raises(SystemExit) as usage:
        main(["serve", "calendar"])
    assert usage.value.code == 2
    assert "'sometimes' is not one of paced, python (also $GATEWAY_GC)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--drain-grace", "nan"),
        ("--drain-grace", "-1"),
        ("--grace", "inf"),
        ("--max-unacked-events", "0"),
        ("--max-unacked-events", "99999999999"),
        ("--max-unacked-bytes", "0"),
    ],
)
def test_a_stop_setting_that_cannot_work_is_a_usage_error_naming_its_flag(flag: str, value: str) -> None:
    cmd = [sys.executable, "-m", "common.cli", "run", "calendar", flag, value]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert flag in proc.stderr and "Traceback" not in proc.stderr


def _gateway(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "common.cli", *argv]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--log-level", "LOUD", "serve", "calendar"], "--log-level"),
        (["serve", "calendar", "--log-level", "LOUD"], "--log-level"),
        (["--log-format", "xml", "serve", "calendar"], "--log-format"),
        (["client", "--event-sources", "x.yaml", "--ops-port", "70000"], "--ops-port"),
        (["run", "calendar", "--ops-port", "many"], "--ops-port"),
        (["serve", "calendar", "--grace", "-5"], "--grace"),
        (["serve", "calendar", "--grace", "nan"], "--grace"),
        (["serve", "calendar", "--metrics-port", "65536"], "--metrics-port"),
        (["client", "--event-sources", "x.yaml", "--server", "127.0.0.1"], "--server"),
        (["client", "--event-sources", "x.yaml", "--server", "host:0"], "--server"),
        (["client", "--event-sources", "x.yaml", "--server", "::1:9330"], "--server"),
        (["client", "--event-sources", "x.yaml", "--ops-host", "a b"], "--ops-host"),
        (["serve", "webhook", "--listen-host", ""], "--listen-host"),
        (["run", "calendar", "--ops-host", "999.1.1.1"], "--ops-host"),
        (["serve", "webhook", "--listen-host", "1.2.3.4.5"], "--listen-host"),
        (["client", "--event-sources", "x.yaml", "--server", "a b:9330"], "--server"),
        (["serve", "calendar", "--host", "300.1.1.1"], "--host"),
        (["serve", "calendar", "--gc", "fast"], "--gc"),
        (["run", "calendar", "--ops-port", "\u0663\u0663\u0663\u0663"], "--ops-port"),
        (["run", "calendar", "--ops-port", " 80"], "--ops-port"),
        (["run", "calendar", "--max-unacked-events", "\u0665\u0660"], "--max-unacked-events"),
        (["client", "--event-sources", "x.yaml", "--retry-cap", "0"], "--retry-cap"),
        (["run", "calendar", "--retry-cap", "nan"], "--retry-cap"),
    ],
)
def test_every_bad_flag_value_is_a_usage_error_naming_the_flag(argv: list[str], flag: str) -> None:
    proc = _gateway(*argv)
    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr and "Traceback" not in proc.stderr


def test_global_flags_work_after_the_command_too(tmp_path: Path) -> None:
    path = write(tmp_path, "a: {interval: 10s}\n")
    proc = _gateway("validate", "calendar", str(path), "--log-format", "json", "--log-level", "debug")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["OK      a"]


def test_version_prints_the_package_version() -> None:
    proc = _gateway("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == "gateway 0.1.0"


def test_a_server_address_with_a_port_is_accepted_in_ipv4_ipv6_and_name_forms() -> None:
    from common.cli import _server_address

    for address in ("127.0.0.1:9330", "[::1]:9330", "gateway.svc:1"):
        assert _server_address(address) == address


def test_validate_on_a_binary_file_says_what_it_expected_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    proc = _gateway("validate", "calendar", str(path))
    assert proc.returncode == 1
    assert "not UTF-8 text" in proc.stdout and "expected a ConfigMap" in proc.stdout
    assert "Traceback" not in proc.stderr


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_listen_host_and_ops_host_bind_the_webhook_and_ops_ports_to_one_interface(
    tmp_path: Path,
) -> None:
    hook, ops = free_port(), free_port()
    config = write(tmp_path, f'h: {{endpoint: /h, method: POST, port: "{hook}"}}\n')
    argv = ["run", "webhook", "--event-sources", str(config), "--listen-host", "127.0.0.2"]
    argv += ["--ops-port", str(ops), "--ops-host", "127.0.0.2"]
    proc = await spawn([sys.executable, "-m", "common.cli", *argv], tmp_path / "run.log")
    try:
        await wait_until(
            lambda: _accepts("127.0.0.2", hook), what="the webhook port on 127.0.0.2", timeout=20
        )
        assert await _accepts("127.0.0.2", ops)
        assert not await _accepts("127.0.0.1", hook), "the webhook port is bound to 127.0.0.2 only"
        assert not await _accepts("127.0.0.1", ops), "the ops port is bound to 127.0.0.2 only"
    finally:
        assert await terminate(proc) == 0, (tmp_path / "run.log").read_text()


def test_make_run_prefixes_each_gateways_lines_with_its_kind() -> None:
    cmd = ["make", "-s", "run"]
    seen: set[str] = set()
    lines: list[str] = []
    out = subprocess.PIPE
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # readiness is each gateway's "Serving" line, not a sleep
                lines.append(line)
                if "Serving the" in line:
                    seen.add(line.split()[0])
                if seen >= {"[webhook]", "[calendar]"}:
                    break
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    assert seen >= {"[webhook]", "[calendar]"}, "".join(lines[-20:])
    logged = [line for line in lines if " INFO " in line or " WARNING " in line]
    assert logged and all(line.startswith(("[webhook]  ", "[calendar] ")) for line in logged)


def test_gateway_run_printing_into_a_closed_pipe_stops_cleanly_without_a_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, "a: {interval: 1s}\n")
    cmd = f"{sys.executable} -m common.cli run calendar --event-sources {config} | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["subject"] == "a"
    assert "Traceback" not in proc.stderr and "stdout was closed" in proc.stderr


def test_printed_events_keep_the_payloads_own_json_text_on_one_line() -> None:
    import io
    from datetime import UTC, datetime

    from common.client.model import GatewayIdentity, ReceivedEvent
    from common.client.printer import Printer
    from common.rpc import eventing_pb2

    out = io.StringIO()
    printer = Printer(GatewayIdentity("gw", "webhook"), out)
    payload = b'{\n  "big": 1e400,\n  "n": 123456789012345678901234567890\n}'
    event = eventing_pb2.Event(name="s", id="s:1", payload=payload, content_type="application/json")
    asyncio.run(printer.publish(ReceivedEvent("s", event, datetime.now(UTC))))
    (line,) = out.getvalue().splitlines()
    assert line.endswith('"data":{   "big": 1e400,   "n": 123456789012345678901234567890 }}')


def test_the_retry_cap_flag_bounds_every_delay_between_delivery_attempts() -> None:
    args = cli._parser().parse_args(["client", "--event-sources", "x.yaml", "--retry-cap", "1.5"])
    retry = cli._delivery(args).settings.retry
    assert retry.cap == 1.5
    assert max(itertools.islice(retry.delays(), 50)) <= 1.5
    default = cli._delivery(cli._parser().parse_args(["run", "calendar"])).settings.retry
    assert default.cap == 10.0
