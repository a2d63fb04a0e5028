"""What Tansu's ``--cert``/``--key`` and ``--authentication`` really do, against the bundled binary.

Each test pins one finding (see ``tests/harness/brokers_tansu.py``): should a newer Tansu start doing
TLS or refusing bad logins, the test that describes the old behaviour fails, and the harness can then
offer what works.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]
from aiokafka.abc import AbstractTokenProvider  # type: ignore[import-untyped, unused-ignore]
from aiokafka.errors import KafkaConnectionError  # type: ignore[import-untyped, unused-ignore]

from common.logs import Repeats
from tests.harness import brokers_tansu
from tests.harness.brokers_base import require, running
from tests.harness.brokers_tansu import SASL_MECHANISMS, Tansu, sasl_handshake
from tests.harness.brokers_wire import KafkaWire, kafka_wire, tcp

OPENSSL = shutil.which("openssl")
TIMEOUT_MS = 1000
"""aiokafka's request timeout here: a TLS handshake nobody answers fails after it."""


@pytest.fixture
def binary() -> Path:
    return require(brokers_tansu.tansu_binary(), brokers_tansu.MISSING)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """``ca.crt`` and a ``server.crt``/``server.key`` for 127.0.0.1 that it signs (from openssl)."""
    openssl = require(Path(OPENSSL) if OPENSSL else None, "no openssl to make certificates with")
    base = [str(openssl), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    base += ["-nodes", "-days", "1"]
    ca = ["-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.crt"), "-subj", "/CN=ca"]
    subprocess.run([*base, *ca], check=True, capture_output=True)
    server = ["-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt")]
    server += ["-subj", "/CN=server", "-CA", str(tmp_path / "ca.crt"), "-CAkey", str(tmp_path / "ca.key")]
    server += ["-addext", "basicConstraints=critical,CA:FALSE", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*base, *server], check=True, capture_output=True)
    return tmp_path


class TansuWith(Tansu):
    """Tansu with extra command-line arguments."""

    def __init__(self, binary: Path, workdir: Path, *extra: str) -> None:
        super().__init__(binary, workdir)
        self.extra = extra

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


@pytest.fixture
async def authenticating(binary: Path) -> AsyncIterator[Tansu]:
    async with running(lambda workdir: Tansu(binary, workdir, authentication=True)) as broker:
        yield broker


def producer(broker: Tansu, **security: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=broker.url, request_timeout_ms=TIMEOUT_MS, **security)


async def start_fails(client: AIOKafkaProducer) -> BaseException:
    """What ``client.start()`` raises (it must raise); the client is stopped after."""
    try:
        await client.start()
    except Exception as error:
        return error
    finally:
        await client.stop()
    raise AssertionError("the client started")


class Token(AbstractTokenProvider):  # type: ignore[misc, unused-ignore]
    async def token(self) -> str:
        return "any.token.at-all"


async def test_cert_and_key_together_stop_tansu_before_it_listens(binary: Path, pki: Path) -> None:
    broker = TansuWith(binary, pki, "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"))
    with pytest.raises(RuntimeError, match="rc=2 before it was ready"):
        await broker.start()
    assert "the argument '--cert <CERT>' cannot be used with '--key <KEY>'" in broker.log_path.read_text()


@pytest.mark.parametrize("flag", ["--cert", "--key"])
async def test_a_listener_given_a_cert_or_a_key_speaks_plaintext_kafka_and_no_tls(
    binary: Path, pki: Path, flag: str
) -> None:
    file = pki / ("server.crt" if flag == "--cert" else "server.key")
    async with running(lambda workdir: TansuWith(binary, workdir, flag, str(file))) as broker:
        # ready: its probe got ApiVersions and Metadata over plain TCP
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(TIMEOUT_MS / 1000):
                await asyncio.open_connection("127.0.0.1", broker.port, ssl=context)
        error = await start_fails(producer(broker, security_protocol="SSL", ssl_context=context))
        assert isinstance(error, KafkaConnectionError), repr(error)
        plain = producer(broker)
        await plain.start()
        await plain.send_and_wait("clear", b"text")
        await plain.stop()


async def test_an_authenticating_tansu_is_ready_yet_drops_a_client_that_has_not_logged_in(
    authenticating: Tansu,
) -> None:
    async with kafka_wire(authenticating.port) as wire:  # ApiVersions is answered before a login
        with pytest.raises(asyncio.IncompleteReadError):
            await wire.metadata()
    error = await start_fails(producer(authenticating))
    assert isinstance(error, KafkaConnectionError), repr(error)


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
async def test_an_authenticating_tansu_accepts_a_handshake_for_scram_and_oauthbearer(
    authenticating: Tansu, mechanism: str
) -> None:
    async with kafka_wire(authenticating.port) as wire:
        assert await sasl_handshake(wire, mechanism) == [mechanism]


async def test_plain_is_not_offered_and_the_handshake_drops_the_connection(authenticating: Tansu) -> None:
    async with kafka_wire(authenticating.port) as wire:
        with pytest.raises(asyncio.IncompleteReadError):
            await sasl_handshake(wire, "PLAIN")
    plain = {"sasl_plain_username": "alice", "sasl_plain_password": "secret"}
    error = await start_fails(
        producer(authenticating, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", **plain)
    )
    assert isinstance(error, KafkaConnectionError), repr(error)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("password", ["secret", "wrong"])
async def test_every_scram_login_from_aiokafka_fails_on_the_unknown_user_answer(
    authenticating: Tansu, mechanism: str, password: str
) -> None:
    login = {"sasl_plain_username": "alice", "sasl_plain_password": password}
    client = producer(authenticating, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism, **login)
    error = await start_fails(client)
    # the server's final message is "e=unknown-user": aiokafka looks for its "v=" signature
    assert type(error) is KeyError and error.args == ("v",), repr(error)


async def test_oauthbearer_refuses_any_token_with_sasl_authentication_failed(
    authenticating: Tansu, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway, when imported, lets each aiokafka message through once a minute: not here.
    monkeypatch.setattr(Repeats, "filter", lambda self, record: True)
    client = producer(
        authenticating,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_provider=Token(),
    )
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        error = await start_fails(client)
    assert isinstance(error, KafkaConnectionError), repr(error)
    assert "[Error 58] SaslAuthenticationFailed" in caplog.text


def _varint(value: int) -> bytes:
    out = b""
    while value > 0x7F:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def _compact(raw: bytes) -> bytes:
    return _varint(len(raw) + 1) + raw


async def flexible_request(port: int, api_key: int, body: bytes) -> bytes:
    """One version-0 request of a flexible API (header v2) on its own connection; the body answered."""
    async with tcp(port) as (reader, writer):
        header = struct.pack(">hhih", api_key, 0, 1, 1) + b"t" + b"\0"  # no tagged fields
        writer.write(struct.pack(">i", len(header + body)) + header + body)
        await writer.drain()
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        response = await reader.readexactly(size)
    assert response[:5] == struct.pack(">i", 1) + b"\0"  # correlation id, no tagged fields
    return response[5:]


ALTER_USER_SCRAM_CREDENTIALS = 51
DESCRIBE_USER_SCRAM_CREDENTIALS = 50
SCRAM_SHA_256 = 2


async def test_scram_credentials_are_accepted_but_not_stored_by_the_memory_engine(binary: Path) -> None:
    alice = _compact(b"alice")
    salted = _compact(b"s" * 32)  # any salted password: the engine keeps none
    upsertion = alice + struct.pack(">bi", SCRAM_SHA_256, 4096) + _compact(b"salt") + salted + b"\0"
    alter = _varint(1) + _varint(2) + upsertion + b"\0"  # no deletions, one upsertion
    describe = _varint(2) + alice + b"\0" + b"\0"
    async with running(lambda workdir: Tansu(binary, workdir)) as broker:
        altered = await flexible_request(broker.port, ALTER_USER_SCRAM_CREDENTIALS, alter)
        # throttle, one result: "alice", error code 0, an empty message
        assert altered == struct.pack(">i", 0) + _varint(2) + alice + struct.pack(">h", 0) + b"\1\0\0"
        described = await flexible_request(broker.port, DESCRIBE_USER_SCRAM_CREDENTIALS, describe)
        # throttle, error code 0, a null message, and no results at all
        assert described == struct.pack(">ih", 0, 0) + b"\0" + b"\0"


async def test_provisioning_needs_a_login_first_on_an_authenticating_tansu(authenticating: Tansu) -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await flexible_request(authenticating.port, ALTER_USER_SCRAM_CREDENTIALS, b"\x01\x01\0")


async def test_a_failed_scram_login_still_lets_the_connection_in(authenticating: Tansu) -> None:
    async with tcp(authenticating.port) as (reader, writer):
        wire = KafkaWire(reader, writer)
        assert await sasl_handshake(wire, "SCRAM-SHA-256") == ["SCRAM-SHA-256"]

        async def token(raw: bytes) -> bytes:  # after a version-0 handshake: bare tokens
            writer.write(struct.pack(">i", len(raw)) + raw)
            await writer.drain()
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            return await reader.readexactly(size)

        assert (await token(b"n,,n=mallory,r=nonce")).startswith(b"r=nonce")
        assert await token(b"c=biws,r=forged,p=AAAA") == b"e=unknown-user"
        await wire.create_topic("breached")
        metadata = await wire.metadata()
    assert metadata.topics == {"breached": 1}
