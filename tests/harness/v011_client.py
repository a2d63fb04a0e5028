"""A client that speaks only the v0.11 proto, as a process of its own: it validates one invalid and
one valid source, then streams the valid one over ``StartEventSource`` until it has ``count`` events,
and prints what it saw as JSON. The stubs are compiled from ``V011_PROTO`` (the v0.11 fields and
nothing else) in the test's directory, so nothing of ours is on its import path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.integration.test_v011_client import V011_PROTO

CLIENT = r"""
import json, sys
import grpc
import eventing_pb2 as pb, eventing_pb2_grpc as rpc

stub = rpc.EventingStub(grpc.insecure_channel(sys.argv[1]))
(bad_name, bad_data), (name, data), count = json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
def source(name, data):
    return pb.EventSource(id="42", name=name, data=data, version="v0.10")
out = {}
v = stub.ValidateEventSource(source(bad_name, bad_data))
out["invalid"] = [v.isValid, v.reason]
v = stub.ValidateEventSource(source(name, data))
out["valid"] = [v.isValid, v.reason]
call = stub.StartEventSource(source(name, data))
payloads = []
for event in call:
    payloads.append([event.name, event.payload.decode()])
    if len(payloads) == count:
        break
call.cancel()
out["events"] = payloads
print(json.dumps(out), flush=True)
"""


async def start(
    folder: Path, server: str, invalid: tuple[str, str], valid: tuple[str, str], count: int = 3
) -> asyncio.subprocess.Process:
    """Compile the v0.11 stubs in ``folder`` and start the client against ``server`` (host:port)."""
    (folder / "eventing.proto").write_text(V011_PROTO)
    protoc = ["-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.", "eventing.proto"]
    compiler = await asyncio.create_subprocess_exec(
        sys.executable, *protoc, cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await compiler.communicate()
    assert compiler.returncode == 0, err.decode()
    (folder / "client.py").write_text(CLIENT)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "client.py",
        server,
        json.dumps(invalid),
        json.dumps(valid),
        str(count),
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"]},
    )


async def result(client: asyncio.subprocess.Process, timeout: float = 30.0) -> dict[str, Any]:
    """What the client saw: ``invalid`` and ``valid`` as [isValid, reason], ``events`` as [name, payload]."""
    async with asyncio.timeout(timeout):
        stdout, stderr = await client.communicate()
    assert client.returncode == 0, stderr.decode()
    found: dict[str, Any] = json.loads(stdout)
    return found
