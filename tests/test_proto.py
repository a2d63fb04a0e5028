"""The committed stubs match proto/eventing.proto, and the v0.11 fields are untouched."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

from common.rpc import eventing_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    (tmp_path / "proto").mkdir()
    shutil.copy(ROOT / "proto" / "eventing.proto", tmp_path / "proto" / "eventing.proto")
    plugin_dir = Path(sys.executable).parent
    env = {"PATH": f"{plugin_dir}:/usr/bin:/bin"}
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Icommon/rpc=proto",
        "--python_out=.",
        "--grpc_python_out=.",
    ]
    cmd += ["--mypy_out=.", "--mypy_grpc_out=.", "common/rpc/eventing.proto"]
    subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    for name in ("eventing_pb2.py", "eventing_pb2.pyi", "eventing_pb2_grpc.py", "eventing_pb2_grpc.pyi"):
        fresh, committed = tmp_path / "common" / "rpc" / name, ROOT / "common" / "rpc" / name
        assert filecmp.cmp(fresh, committed, shallow=False), f"{name} drifted from the proto: run make proto"


def test_the_v0_11_fields_keep_their_numbers_and_types() -> None:
    def fields(message: str) -> dict[str, tuple[int, int]]:
        desc = eventing_pb2.DESCRIPTOR.message_types_by_name[message]
        return {f.name: (f.number, f.type) for f in desc.fields}

    string, boolean, raw = 9, 8, 12
    assert eventing_pb2.DESCRIPTOR.package == "gateways"
    source = {k: v for k, v in fields("EventSource").items() if v[0] <= 4}
    assert source == {"id": (1, string), "name": (2, string), "data": (3, string), "version": (4, string)}
    assert {k: v for k, v in fields("Event").items() if v[0] <= 2} == {
        "name": (1, string),
        "payload": (2, raw),
    }
    assert fields("ValidEventSource") == {"isValid": (1, boolean), "reason": (2, string)}
    service = eventing_pb2.DESCRIPTOR.services_by_name["Eventing"]
    assert service.full_name == "gateways.Eventing"
    start = service.methods_by_name["StartEventSource"]
    assert start.server_streaming and not start.client_streaming
    assert not service.methods_by_name["ValidateEventSource"].server_streaming
