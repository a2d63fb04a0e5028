"""A client generated on its own from the v0.11 proto text drives ``gateway serve calendar``.

The client runs in its own Python process with its own stubs (the v0.11 messages only, no field
of ours), as the original Go gateway-client would: validate, start, receive on time, cancel.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

V011_PROTO = """
syntax = "proto3";
package gateways;
service Eventing {
  rpc StartEventSource(EventSource) returns (stream Event);
  rpc ValidateEventSource(EventSource) returns (ValidEventSource);
}
message EventSource { string id = 1; string name = 2; string data = 3; string version = 4; }
message Event { string name = 1; bytes payload = 2; }
message ValidEventSource { bool isValid = 1; string reason = 2; }
"""

CLIENT = textwrap.dedent(
    r"""
    import json, sys, time
    from datetime import datetime
    import grpc
    import eventing_pb2 as pb, eventing_pb2_grpc as rpc

    stub = rpc.EventingStub(grpc.insecure_channel(sys.argv[1]))
    out = {}
    def source(name, data, version="v0.10"):
        return pb.EventSource(id="42", name=name, data=data, version=version)
    out["invalid"] = {}
    for name, data, version in [
        ("neither", "timezone: UTC", "v0.10"),
        ("badcron", "schedule: '61 * * * *'", "v0.10"),
        ("badduration", "interval: 10", "v0.10"),
        ("badzone", "interval: 1s\ntimezone: Mars/Olympus", "v0.10"),
        ("badexdate", "interval: 1s\nrecurrence: ['EXDATE:2019x']", "v0.10"),
        ("badversion", "interval: 1s", "v0.9"),
    ]:
        v = stub.ValidateEventSource(source(name, data, version))
        out["invalid"][name] = [v.isValid, v.reason]
    v = stub.ValidateEventSource(source("cal", "interval: 200ms"))
    out["valid"] = [v.isValid, v.reason]
    call = stub.StartEventSource(source("cal", "interval: 200ms\nuserPayload: '{\"a\": 1}'"))
    events = []
    for event in call:
        events.append([event.name, json.loads(event.payload), time.time()])
        if len(events) == 3:
            break
    call.cancel()
    out["events"] = events
    print(json.dumps(out), flush=True)
    """
)


def test_a_v0_11_client_validates_starts_receives_on_time_and_cancels(tmp_path: Path) -> None:
    (tmp_path / "eventing.proto").write_text(V011_PROTO)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
            "eventing.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    (tmp_path / "client.py").write_text(CLIENT)
    env = dict(os.environ, GATEWAY_SERVER_PORT="0")
    server_cmd = [sys.executable, "-m", "common.cli", "serve", "calendar", "--port", "0"]
    with subprocess.Popen(server_cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as server:
        try:
            client = _drive(server, tmp_path)
        finally:
            if server.poll() is None:
                server.kill()
    _check(json.loads(client.stdout))


def _drive(server: subprocess.Popen[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert server.stderr is not None
    for line in server.stderr:
        if "Serving the calendar gateway" in line:
            port = int(line.rsplit(":", 1)[1].rstrip(".\n"))
            break
    client = subprocess.run(
        [sys.executable, "client.py", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    assert client.returncode == 0, client.stderr
    for line in server.stderr:  # the cancel reaches the server and stops the source
        if "[cal] Event source stopped." in line:
            break
    server.send_signal(signal.SIGTERM)
    server.stderr.read()
    assert server.wait(timeout=15) == 0
    return client


def _check(result: dict[str, Any]) -> None:
    fields = {"neither": "schedule", "badcron": "schedule", "badduration": "interval"}
    fields |= {"badzone": "timezone", "badexdate": "recurrence[0]", "badversion": "version"}
    for name, field in fields.items():
        valid, reason = result["invalid"][name]
        assert valid is False
        assert f"'{name}'" in reason
        assert f"{field}:" in reason
    assert result["valid"] == [True, ""]

    events = result["events"]
    assert [e[0] for e in events] == ["cal"] * 3
    from datetime import datetime

    slots = [datetime.fromisoformat(e[1]["eventTime"].replace("Z", "+00:00")).timestamp() for e in events]
    assert [e[1]["userPayload"] for e in events] == ['{"a": 1}'] * 3  # a YAML string stays a JSON string
    assert all(round(s * 1000) % 200 == 0 for s in slots), "interval slots sit at multiples of 200ms"
    assert [round((b - a) * 1000) for a, b in itertools.pairwise(slots)] == [200, 200]
    lateness = [received - slot for (_, _, received), slot in zip(events, slots, strict=True)]
    assert all(0 <= late < 0.15 for late in lateness), lateness
