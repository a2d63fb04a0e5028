"""``gateway serve KIND --metrics-port``: the server's own metrics, the same for every kind, served by
a real process and read over HTTP while a real gRPC stream runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import aiohttp
import grpc

from common.rpc import eventing_pb2, eventing_stub
from tests.harness.processes import free_port, spawn, terminate, wait_tcp, wait_until


async def _metrics(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


def _value(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_the_calendar_server_reports_sources_events_buffers_and_stream_ends(tmp_path: Path) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "common.cli", "serve", "calendar", "--port", str(grpc_port)]
    server = await spawn([*cmd, "--metrics-port", str(metrics_port)], tmp_path / "server.log")
    try:
        await wait_tcp(grpc_port, server)
        await wait_tcp(metrics_port, server)
        source = eventing_pb2.EventSource(id="1", name="tick", data="interval: 1s", version="v0.10")
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
            aiohttp.ClientSession() as http,
        ):
            call = eventing_stub(channel).StartEventSource(source)
            await call.read()
            await call.read()
            text = await _metrics(http, metrics_port)
            assert _value(text, "gateway_server_sources_running") == 1
            assert _value(text, 'gateway_server_events_sent_total{source="tick"}') >= 2
            assert 'gateway_server_buffered_events{source="tick"}' in text
            call.cancel()

            async def ended() -> bool:
                text = await _metrics(http, metrics_port)
                return _value(text, 'gateway_server_stream_ends_total{code="CANCELLED"}') == 1

            await wait_until(ended, what="the cancelled stream counted")
            text = await _metrics(http, metrics_port)
            assert _value(text, "gateway_server_sources_running") == 0
            assert 'gateway_server_buffered_events{source="tick"}' not in text
    finally:
        assert await terminate(server) == 0, (tmp_path / "server.log").read_text()
