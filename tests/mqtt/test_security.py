"""Logging in to a real mosquitto that demands a password (from secret references, never shown), and
TLS through a local TLS-terminating proxy (the test broker listens without TLS: the proxy terminates
it and pipes MQTT to the broker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness import brokers_mosquitto
from tests.harness.brokers import Mosquitto, mosquitto
from tests.harness.brokers_base import require, running
from tests.harness.brokers_mqtt import mqtt_ready
from tests.harness.brokers_wire import WireError
from tests.harness.kafka_proxy import make_pki, server_context
from tests.harness.processes import free_port
from tests.harness.tls_proxy import tls_proxy
from tests.mqtt.conftest import publish, source_yaml
from tests.nats.conftest import open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

PASSWORD = "s3cret-Mqtt-pass"


class Locked(Mosquitto):
    """mosquitto with a password file: anonymous clients are refused."""

    def command(self) -> list[str]:
        cmd = super().command()
        passwords = self.workdir / "passwords"
        passwords.write_text("")
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), "app", PASSWORD], check=True, capture_output=True
        )
        text = self.config_path.read_text().replace("allow_anonymous true", "allow_anonymous false")
        self.config_path.write_text(text + f"password_file {passwords}\n")
        return cmd

    async def probe(self) -> None:
        """Ready once it answers CONNECT at all: its refusal of the anonymous probe counts."""
        with contextlib.suppress(WireError):
            await mqtt_ready(self.port)


@contextlib.asynccontextmanager
async def locked() -> AsyncIterator[Locked]:
    binary = require(brokers_mosquitto.mosquitto_binary(), brokers_mosquitto.MISSING)
    async with running(lambda workdir: Locked(binary, workdir)) as server:
        yield server


async def test_a_user_and_a_password_from_a_file_log_in(stub: EventingAsyncStub, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    async with locked() as broker:
        data = source_yaml(broker.url, "t", "username: app", f"password: {{file: {secret}}}")
        call, reader = await open_stream(stub, start("login", data, state=True))
        assert await take_state(reader, timeout=20) == "state CONNECTED 0"
        call.cancel()


async def test_a_wrong_password_is_refused_with_the_brokers_reason_and_never_shown(
    stub: EventingAsyncStub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "not-the-Password-7")
    caplog.set_level(logging.DEBUG)
    async with locked() as broker:
        data = source_yaml(broker.url, "t", "username: app", "password: {env: MQTT_TEST_PASSWORD}")
        call, reader = await open_stream(stub, start("refused", data, state=True))
        state = await take_state(reader, timeout=20)
        assert state.startswith("state DISCONNECTED 0") and "refused the connection" in state, state
        assert "not-the-Password-7" not in state + caplog.text
        call.cancel()


async def test_a_source_reads_over_tls_with_the_ca_and_refuses_a_broker_it_cannot_verify(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    async with mosquitto() as broker, tls_proxy(broker.port, server_context(pki)) as proxy:
        url = f"ssl://127.0.0.1:{proxy.port}"
        wrong = source_yaml(url, "t", f"tls: {{ca: {pki.crt('other')}}}")
        call, reader = await open_stream(stub, start("unverified", wrong, state=True))
        state = await take_state(reader, timeout=20)
        assert state.startswith("state DISCONNECTED 0") and "CERTIFICATE_VERIFY_FAILED" in state, state
        call.cancel()
        right = source_yaml(url, "t", "qos: 1", f"tls: {{ca: {pki.crt('ca')}}}")
        call, reader = await open_stream(stub, start("verified", right, acknowledges=True, state=True))
        assert await take_state(reader, timeout=20) == "state CONNECTED 0"
        await asyncio.to_thread(publish, broker.port, "t", "over tls")
        assert await take(reader, 1) == ["over tls"]
        call.cancel()


class OverWebSockets(Mosquitto):
    """mosquitto listening for MQTT over WebSockets on a second port (``ws_port``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ws_port = free_port()

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text()
        self.config_path.write_text(text + f"listener {self.ws_port} 127.0.0.1\nprotocol websockets\n")
        return cmd


async def test_a_source_reads_over_websockets(stub: EventingAsyncStub) -> None:
    binary = require(brokers_mosquitto.mosquitto_binary(), brokers_mosquitto.MISSING)
    async with running(lambda workdir: OverWebSockets(binary, workdir)) as broker:
        data = source_yaml(f"ws://127.0.0.1:{broker.ws_port}/mqtt", "t", "qos: 1")
        call, reader = await open_stream(stub, start("ws", data, acknowledges=True, state=True))
        assert await take_state(reader, timeout=20) == "state CONNECTED 0"
        await asyncio.to_thread(publish, broker.port, "t", "over websockets")
        assert await take(reader, 1) == ["over websockets"]
        call.cancel()
