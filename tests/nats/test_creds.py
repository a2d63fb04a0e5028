"""Logging in with a ``.creds`` file (user JWT and nkey seed) to a real nats-server in operator (JWT)
mode: from a file and from a variable holding its text; a user the server does not know is refused,
and neither the seed nor the JWT is ever shown; a text that is not a whole ``.creds`` file is refused
before nats-py reads it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import nats
import pytest
from nats.aio.client import RawCredentials

from tests.harness.nats_jwt import Trust, stranger_creds
from tests.harness.processes import wait_until
from tests.nats.conftest import Broker, broker_with, open_stream, source_yaml, spec, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

CREDS_VARIABLE = "NATS_TEST_CREDS"


@asynccontextmanager
async def operator_mode(trust: Trust, workdir: Path) -> AsyncIterator[Broker]:
    """A broker that trusts only ``trust``'s operator and knows its accounts."""
    config = workdir / "operator.conf"
    config.write_text(trust.server_config())
    async with broker_with("-c", str(config)) as broker:
        yield broker


async def publish_as_another_user(broker: Broker, trust: Trust, subject: str, payload: bytes) -> None:
    """Publish as a second user of the account: only a user of the same account reaches the source."""
    publisher = await nats.connect(broker.url, user_credentials=RawCredentials(trust.creds("publisher")))
    await publisher.publish(subject, payload)
    await publisher.close()


def jwt_and_seed(creds: str) -> tuple[str, str]:
    """The user JWT and nkey seed of a ``.creds`` text (each the line after its BEGIN line)."""
    lines = creds.splitlines()
    return lines[1], lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]


async def test_credentials_from_a_file_log_in_and_receive_what_another_user_of_the_account_publishes(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    trust = Trust()
    creds = tmp_path / "source.creds"
    creds.write_text(trust.creds("source"))
    async with operator_mode(trust, tmp_path) as broker:
        data = source_yaml(broker.url, "orders", f"credentials: {{file: {creds}}}")
        call, reader = await open_stream(stub, start("creds-file", data, state=True))
        await broker.subscribed("creds-file", "orders")
        await publish_as_another_user(broker, trust, "orders", b"from a file")
        assert (await take(reader, 1))[-2:] == ["state CONNECTED 0", "from a file"]
        call.cancel()


async def test_credentials_from_a_variable_holding_the_file_text_log_in_and_receive_a_message(
    stub: EventingAsyncStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = Trust()
    monkeypatch.setenv(CREDS_VARIABLE, trust.creds("source"))
    async with operator_mode(trust, tmp_path) as broker:
        data = source_yaml(broker.url, "orders", f"credentials: {{env: {CREDS_VARIABLE}}}")
        call, reader = await open_stream(stub, start("creds-env", data))
        await broker.subscribed("creds-env", "orders")
        await publish_as_another_user(broker, trust, "orders", b"from a variable")
        assert [e.payload for e in await reader.events(1)] == [b"from a variable"]
        call.cancel()


@pytest.mark.parametrize("where", ["file", "env"])
async def test_credentials_of_a_user_the_server_does_not_know_are_refused_and_never_shown(
    stub: EventingAsyncStub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = stranger_creds()  # its account key signed it, but no server was told of that account
    creds = tmp_path / "stranger.creds"
    creds.write_text(stranger)
    monkeypatch.setenv(CREDS_VARIABLE, stranger)
    ref = f"{{file: {creds}}}" if where == "file" else f"{{env: {CREDS_VARIABLE}}}"
    async with operator_mode(Trust(), tmp_path) as broker:
        data = source_yaml(broker.url, "stranger", f"credentials: {ref}")
        call, reader = await open_stream(stub, start("stranger", data, state=True))
        refused = await take_state(reader)  # said once: the retries' reason is the same
        await wait_until(lambda: "attempt #2/" in caplog.text, what="a second attempt refused too")
        call.cancel()
        server_log = broker.log_path.read_text()
    assert refused.startswith(f"state DISCONNECTED 0 cannot connect to {broker.url}: "), refused
    assert "authorization" in refused.lower(), refused
    # The JWT reached the server (a login without one is refused before any account is looked up).
    assert "Account fetch failed: account missing" in server_log
    for secret in jwt_and_seed(stranger):
        assert secret.startswith(("eyJ", "SU")), secret
        for shown in (refused, caplog.text):
            assert secret not in shown
            assert secret[-20:] not in shown  # nor a piece of it (a JWT's signature, the seed's end)


def without_jwt(creds: str) -> str:
    """``creds`` with its user JWT block cut out: only the seed block is left."""
    return creds.split("------END NATS USER JWT------", 1)[1]


async def test_a_credentials_variable_without_a_jwt_ends_the_source_invalid_and_the_server_goes_on(
    stub: EventingAsyncStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nats-py, handed such a text, reads lines for the JWT forever: the event loop with it.
    trust = Trust()
    monkeypatch.setenv(CREDS_VARIABLE, without_jwt(trust.creds("source")))
    async with operator_mode(trust, tmp_path) as broker:
        call = stub.StartEventSource(
            spec("halfcreds", source_yaml(broker.url, "orders", f"credentials: {{env: {CREDS_VARIABLE}}}"))
        )
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            f"the credentials in env {CREDS_VARIABLE} are not a .creds file: no BEGIN NATS USER JWT line"
            in (ended.value.details() or "")
        )
        monkeypatch.setenv(CREDS_VARIABLE, trust.creds("source"))  # the server still serves sources
        data = source_yaml(broker.url, "orders", f"credentials: {{env: {CREDS_VARIABLE}}}")
        call, _ = await open_stream(stub, start("wholecreds", data))
        await broker.subscribed("wholecreds", "orders")
        call.cancel()


async def test_a_credentials_file_without_a_seed_is_said_in_status_until_it_is_rewritten(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    trust = Trust()
    creds = tmp_path / "source.creds"
    whole = trust.creds("source")
    creds.write_text(whole.split("************************* IMPORTANT", 1)[0])  # the JWT block alone
    async with operator_mode(trust, tmp_path) as broker:
        data = source_yaml(broker.url, "orders", f"credentials: {{file: {creds}}}")
        call, reader = await open_stream(stub, start("halfcreds", data, state=True))
        assert await take_state(reader) == (
            f"state DISCONNECTED 0 event source 'halfcreds': the credentials in file {creds} are not a "
            ".creds file: no BEGIN USER NKEY SEED line"
        )
        creds.write_text(whole)  # the Secret is rotated: the next attempt reads the new file
        await broker.subscribed("halfcreds", "orders")
        assert await take_state(reader) == "state CONNECTED 1"
        call.cancel()


async def test_a_creds_file_with_crlf_line_ends_logs_in(stub: EventingAsyncStub, tmp_path: Path) -> None:
    trust = Trust()
    creds = tmp_path / "windows.creds"
    creds.write_bytes(trust.creds("source").replace("\n", "\r\n").encode())
    async with operator_mode(trust, tmp_path) as broker:
        data = source_yaml(broker.url, "orders", f"credentials: {{file: {creds}}}")
        call, reader = await open_stream(stub, start("crlf", data))
        await broker.subscribed("crlf", "orders")
        await publish_as_another_user(broker, trust, "orders", b"crlf")
        assert [e.payload for e in await reader.events(1)] == [b"crlf"]
        call.cancel()


async def test_a_creds_file_rewritten_badly_while_connected_costs_the_reconnect_not_the_server(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    trust = Trust()
    creds = tmp_path / "rotating.creds"
    creds.write_text(trust.creds("source"))
    async with operator_mode(trust, tmp_path) as broker:
        data = source_yaml(broker.url, "orders", f"credentials: {{file: {creds}}}")
        call, reader = await open_stream(stub, start("rotating", data, state=True))
        await broker.subscribed("rotating", "orders")
        assert await take_state(reader) == "state CONNECTED 0"
        creds.write_text("-----BEGIN USER NKEY SEED-----\nSUAxxxx\n------END USER NKEY SEED------\n")
        await broker.stop()
        assert (await take_state(reader)).startswith("state DISCONNECTED 0")
        await broker.start()
        # The reconnects fail (no JWT in the file) without hanging the server: it still answers.
        health = await stub.ValidateEventSource(spec("other", source_yaml(broker.url, "x")), timeout=5)
        assert health.isValid
        creds.write_text(trust.creds("source"))  # fixed: the next reconnect logs in again
        assert (await take_state(reader, timeout=30)) == "state CONNECTED 1"
        call.cancel()
