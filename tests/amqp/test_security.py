"""Logging in to a real RabbitMQ with secret references, and TLS through a local TLS-terminating
proxy (the test node listens without TLS: the proxy terminates it and pipes AMQP to the node)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.amqp.conftest import publish, publisher, source_yaml
from tests.harness.brokers import RabbitMQ
from tests.harness.kafka_proxy import make_pki, server_context
from tests.harness.tls_proxy import tls_proxy
from tests.nats.conftest import open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

PASSWORD_VARIABLE = "AMQP_TEST_PASSWORD"


def bare(url: str) -> str:
    """``url`` without its user and password."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


async def test_a_user_and_a_password_from_secret_references_log_in(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange, queue = names
    monkeypatch.setenv(PASSWORD_VARIABLE, "guest")
    data = source_yaml(
        bare(broker.url),
        exchange,
        "k",
        f"queueDeclare: {{name: {queue}}}",
        "username: guest",
        f"password: {{env: {PASSWORD_VARIABLE}}}",
    )
    call, reader = await open_stream(stub, start("login", data, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    connection, declared = await publisher(broker.url, exchange)
    await publish(declared, "k", "let in")
    assert await take(reader, 1) == ["let in"]
    call.cancel()
    await connection.close()


async def test_a_wrong_password_is_refused_with_the_brokers_reason_and_never_shown(
    stub: EventingAsyncStub,
    broker: RabbitMQ,
    names: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exchange, _ = names
    secret = tmp_path / "password"
    secret.write_text("not-the-Password-42\n")
    data = source_yaml(bare(broker.url), exchange, "k", "username: guest", f"password: {{file: {secret}}}")
    caplog.set_level(logging.DEBUG)
    call, reader = await open_stream(stub, start("refused", data, state=True))
    state = await take_state(reader, timeout=20)
    assert state.startswith("state DISCONNECTED 0"), state
    assert "ACCESS_REFUSED" in state or "auth" in state.lower(), state
    assert "not-the-Password-42" not in state + caplog.text
    call.cancel()


async def test_a_source_reads_over_tls_with_the_ca_and_refuses_a_broker_it_cannot_verify(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str], tmp_path: Path
) -> None:
    exchange, queue = names
    pki = make_pki(tmp_path)
    async with tls_proxy(broker.port, server_context(pki)) as proxy:
        url = f"amqps://guest:guest@127.0.0.1:{proxy.port}/"
        wrong = source_yaml(url, exchange, "k", f"tls: {{ca: {pki.crt('other')}}}")
        call, reader = await open_stream(stub, start("unverified", wrong, state=True))
        state = await take_state(reader, timeout=20)
        assert state.startswith("state DISCONNECTED 0") and "CERTIFICATE_VERIFY_FAILED" in state, state
        assert "guest:guest" not in state
        call.cancel()
        right = source_yaml(
            url, exchange, "k", f"queueDeclare: {{name: {queue}}}", f"tls: {{ca: {pki.crt('ca')}}}"
        )
        call, reader = await open_stream(stub, start("verified", right, state=True))
        assert await take_state(reader, timeout=20) == "state CONNECTED 0"
        connection, declared = await publisher(broker.url, exchange)
        await publish(declared, "k", "over tls")
        assert await take(reader, 1) == ["over tls"]
        call.cancel()
        await connection.close()
