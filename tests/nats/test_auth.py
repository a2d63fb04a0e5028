"""Logging in to a real nats-server that demands it: tokens and users from secret references, and
credentials inline in the URL, which are never shown."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import nats
import pytest

from tests.nats.conftest import broker_with, open_stream, source_yaml, spec, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

TOKEN = "s3cret-token"
PASSWORD = "s3cret-pass"


async def test_a_token_from_a_file_logs_in_and_a_rotated_file_is_read_at_the_next_attempt(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-token\n")
    async with broker_with("--auth", TOKEN) as broker:
        data = source_yaml(broker.url, "secured", f"token: {{file: {token}}}")
        call, reader = await open_stream(stub, start("secured", data, state=True))
        refused = await take_state(reader)
        assert refused.startswith(f"state DISCONNECTED 0 cannot connect to {broker.url}: "), refused
        assert "Authorization" in refused or "authorization" in refused, refused
        token.write_text(TOKEN + "\n")  # the Secret is rotated: the next attempt reads the new file
        await broker.subscribed("secured", "secured")
        publisher = await nats.connect(broker.url, token=TOKEN)
        await publisher.publish("secured", b"let in")
        assert (await take(reader, 1))[-2:] == ["state CONNECTED 1", "let in"]
        await publisher.close()
        call.cancel()


async def test_a_user_and_password_from_the_environment_log_in(
    stub: EventingAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_TEST_PASSWORD", PASSWORD)
    async with broker_with("--user", "app", "--pass", PASSWORD) as broker:
        data = source_yaml(broker.url, "user", "username: app", "password: {env: NATS_TEST_PASSWORD}")
        call, reader = await open_stream(stub, start("user", data))
        await broker.subscribed("user", "user")
        publisher = await nats.connect(broker.url, user="app", password=PASSWORD)
        await publisher.publish("user", b"hello")
        assert [e.payload for e in await reader.events(1)] == [b"hello"]
        await publisher.close()
        call.cancel()


async def test_credentials_in_the_url_log_in_and_are_never_shown_in_state_or_logs(
    stub: EventingAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with broker_with("--user", "app", "--pass", PASSWORD) as broker:
        wrong = broker.url.replace("nats://", "nats://app:wrong-pass@")
        call, reader = await open_stream(stub, start("inline", source_yaml(wrong, "inline"), state=True))
        refused = await take_state(reader)
        assert "nats://app:***@127.0.0.1" in refused, refused
        call.cancel()
        right = broker.url.replace("nats://", f"nats://app:{PASSWORD}@")
        call, reader = await open_stream(stub, start("inline", source_yaml(right, "inline"), state=True))
        await broker.subscribed("inline", "inline")
        assert await take_state(reader) == "state CONNECTED 0"
        call.cancel()
    assert "wrong-pass" not in caplog.text
    assert PASSWORD not in caplog.text
    assert "nats://app:***@" in caplog.text


async def test_a_token_file_not_mounted_yet_is_waited_for_and_said_in_status(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    token = tmp_path / "mounted" / "token"
    async with broker_with("--auth", TOKEN) as broker:
        data = source_yaml(broker.url, "mounting", f"token: {{file: {token}}}")
        call, reader = await open_stream(stub, start("mounting", data, state=True))
        waiting = await take_state(reader)
        assert (
            waiting == f"state DISCONNECTED 0 cannot read the secret file {token}: No such file or directory"
        )
        token.parent.mkdir()
        token.write_text(TOKEN)
        await broker.subscribed("mounting", "mounting")
        assert await take_state(reader) == "state CONNECTED 1"
        call.cancel()


async def test_a_password_variable_that_is_unset_refuses_the_source_until_its_config_changes(
    stub: EventingAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_TEST_UNSET", raising=False)
    data = source_yaml("nats://127.0.0.1:1", "x", "username: app", "password: {env: NATS_TEST_UNSET}")
    call = stub.StartEventSource(spec("unset", data))
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await call.read()
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "environment variable NATS_TEST_UNSET is unset or empty" in (ended.value.details() or "")


async def test_an_nkey_seed_from_a_file_or_a_variable_logs_in(
    stub: EventingAsyncStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nkeys = pytest.importorskip("nkeys", reason="nkey logins need the nkeys package (nats-py[nkeys])")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (tmp_path / "seed.nk").write_bytes(seed + b"\n")
    monkeypatch.setenv("NATS_TEST_SEED", seed.decode())
    server_config = tmp_path / "nats.conf"
    server_config.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    async with broker_with("-c", str(server_config)) as broker:
        for name, ref in (
            ("seedfile", f"{{file: {tmp_path / 'seed.nk'}}}"),
            ("seedenv", "{env: NATS_TEST_SEED}"),
        ):
            call, _ = await open_stream(stub, start(name, source_yaml(broker.url, name, f"nkey: {ref}")))
            await broker.subscribed(name, name)
            call.cancel()
