"""TLS and SASL of the Kafka gateway server, for real, through a local Kafka-protocol proxy.

Tansu cannot serve TLS/SASL: this proxy terminates them and forwards plaintext
(``tests.harness.kafka_proxy``). Tansu advertises the proxy's port, so every connection of the
gateway's consumer (bootstrap, group coordinator, partition leader) goes through it; the proxy
checks PLAIN itself and SCRAM-SHA-256/512 with ``scramp``, and refuses a wrong password with error
58 as Kafka does. Records are produced through the proxy by a client of the test's own (another
user), so each login the proxy lets in as ``alice`` is the gateway's.
"""

from __future__ import annotations

import shutil
import ssl
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]

from tests.harness.brokers_wire import kafka_wire
from tests.harness.kafka_proxy import (
    SASL_AUTHENTICATE,
    SASL_HANDSHAKE,
    Pki,
    Proxied,
    client_context,
    make_pki,
    proxied_tansu,
    server_context,
)
from tests.kafka.conftest import group_yaml
from tests.kafka.test_stream import no_source_running
from tests.nats.conftest import open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

USER, PASSWORD = "alice", "correct horse battery staple"
"""The gateway's login."""
PRODUCER, PRODUCER_PASSWORD = "producer", "producer-secret"
"""The test's own producer's login."""
USERS = {USER: PASSWORD, PRODUCER: PRODUCER_PASSWORD}
WRONG = "not-alices-password-31337"
RECORDS = ("r0", "r1", "r2")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def tls_line(ca: Path, *client: Path) -> str:
    cert = f", cert: {client[0]}, key: {client[1]}" if client else ""
    return f"tls: {{ca: {ca}{cert}}}"


def sasl_line(mechanism: str, username: str, password: str) -> str:
    return f"sasl: {{mechanism: {mechanism}, username: {username}, password: {password}}}"


async def produce(kafka: Proxied, topic: str, *values: str, **security: object) -> None:
    """``topic`` made on Tansu, then ``values`` sent to its partition 0 through the proxy."""
    await kafka.create_topic(topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all", **security)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value.encode(), partition=0)
    finally:
        await producer.stop()


def producer_login(mechanism: str, tls: ssl.SSLContext | None = None) -> dict[str, object]:
    """The test producer's aiokafka options for a SASL proxy (over TLS with ``tls``)."""
    return {
        "security_protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
        "ssl_context": tls,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": PRODUCER,
        "sasl_plain_password": PRODUCER_PASSWORD,
    }


async def streams(stub: EventingAsyncStub, name: str, data: str) -> None:
    """A source of ``data`` delivers ``RECORDS`` in order; then it is stopped."""
    call, reader = await open_stream(stub, start(name, data, state=True))
    seen = await take(reader, len(RECORDS))
    assert [s for s in seen if not s.startswith("state ")] == list(RECORDS), seen
    assert seen[0] == "state CONNECTED 0", seen
    call.cancel()
    await no_source_running()


async def refused(stub: EventingAsyncStub, name: str, data: str) -> str:
    """The first state of a source of ``data``, which must be DISCONNECTED; then it is stopped."""
    call, reader = await open_stream(stub, start(name, data, state=True))
    state = await take_state(reader, timeout=20)
    assert state.startswith("state DISCONNECTED 0 "), state
    call.cancel()
    await no_source_running()
    return state


async def test_a_group_source_streams_records_over_tls_trusting_the_configured_ca(
    stub: EventingAsyncStub, pki: Pki
) -> None:
    async with proxied_tansu(tls=server_context(pki)) as kafka:
        tls = client_context(pki)
        await produce(kafka, "orders", *RECORDS, security_protocol="SSL", ssl_context=tls)
        await streams(stub, "secure", group_yaml(kafka.url, "orders", "g1", tls_line(pki.crt("ca"))))


async def test_a_source_presents_its_client_certificate_to_a_proxy_that_requires_one(
    stub: EventingAsyncStub, pki: Pki
) -> None:
    async with proxied_tansu(tls=server_context(pki, client_certificates=True)) as kafka:
        tls = client_context(pki, certificate=True)
        await produce(kafka, "orders", *RECORDS, security_protocol="SSL", ssl_context=tls)
        mutual = tls_line(pki.crt("ca"), pki.crt("client"), pki.key("client"))
        await streams(stub, "mutual", group_yaml(kafka.url, "orders", "g1", mutual))
        accepted = kafka.proxy.accepted
        await refused(stub, "anonymous", group_yaml(kafka.url, "orders", "g2", tls_line(pki.crt("ca"))))
        assert kafka.proxy.accepted == accepted, "a connection without a client certificate got in"


async def test_a_broker_certificate_from_another_ca_is_refused_naming_the_tls_failure_then_retried(
    stub: EventingAsyncStub, pki: Pki, tmp_path: Path
) -> None:
    trust = tmp_path / "mounted-ca.crt"
    shutil.copy(pki.crt("other"), trust)
    async with proxied_tansu(tls=server_context(pki)) as kafka:
        await produce(kafka, "orders", *RECORDS, security_protocol="SSL", ssl_context=client_context(pki))
        data = group_yaml(kafka.url, "orders", "g1", tls_line(trust))
        call, reader = await open_stream(stub, start("mitm", data, state=True))
        state = await take_state(reader, timeout=20)
        assert state.startswith("state DISCONNECTED 0 ") and kafka.url in state, state
        assert "CERTIFICATE_VERIFY_FAILED" in state, state  # the TLS failure, not a bare "unreachable"
        # The source retries (it did not crash): once the right CA is mounted, it connects and streams.
        shutil.copy(pki.crt("ca"), trust)
        while (state := await take_state(reader, timeout=20)).startswith("state DISCONNECTED"):
            assert "CERTIFICATE_VERIFY_FAILED" in state, state
        assert state.startswith("state CONNECTED"), state
        assert await take(reader, len(RECORDS)) == list(RECORDS)
        call.cancel()
        await no_source_running()


async def test_sasl_plain_logs_in_with_a_text_username_and_a_password_from_a_file(
    stub: EventingAsyncStub, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(f"{PASSWORD}\n")
    async with proxied_tansu(users=USERS) as kafka:
        await produce(kafka, "orders", *RECORDS, **producer_login("PLAIN"))
        sasl = sasl_line("PLAIN", USER, f"{{file: {secret}}}")
        await streams(stub, "plain", group_yaml(kafka.url, "orders", "g1", sasl))
        assert ("PLAIN", USER) in kafka.proxy.logins, kafka.proxy.logins


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_logs_in_with_a_username_and_a_password_from_the_environment(
    stub: EventingAsyncStub, monkeypatch: pytest.MonkeyPatch, mechanism: str
) -> None:
    monkeypatch.setenv("KAFKA_USER", USER)
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    async with proxied_tansu(users=USERS) as kafka:
        await produce(kafka, "orders", *RECORDS, **producer_login(mechanism))
        sasl = sasl_line(mechanism, "{env: KAFKA_USER}", "{env: KAFKA_PASSWORD}")
        await streams(stub, "scram", group_yaml(kafka.url, "orders", "g1", sasl))
        assert kafka.proxy.logins.count((mechanism, USER)) >= 2, kafka.proxy.logins  # bootstrap, then more
        assert all(mech == mechanism for mech, _ in kafka.proxy.logins), kafka.proxy.logins


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_wrong_password_is_reported_as_a_refused_login_that_never_shows_the_password(
    stub: EventingAsyncStub, tmp_path: Path, mechanism: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text(WRONG)
    async with proxied_tansu(users=USERS) as kafka:
        await kafka.create_topic("orders")
        sasl = sasl_line(mechanism, USER, f"{{file: {secret}}}")
        state = await refused(stub, "wrong", group_yaml(kafka.url, "orders", "g1", sasl))
        assert kafka.proxy.refusals, "the proxy refused no login"
        assert kafka.proxy.logins == []
        assert state.startswith(f"state DISCONNECTED 0 the brokers {kafka.url} refused the login: "), state
        assert "SaslAuthenticationFailed" in state, state
        assert WRONG not in state and PASSWORD not in state, state


async def test_sasl_over_tls_logs_in_and_streams(stub: EventingAsyncStub, pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    async with proxied_tansu(tls=server_context(pki), users=USERS) as kafka:
        login = producer_login("SCRAM-SHA-512", tls=client_context(pki))
        await produce(kafka, "orders", *RECORDS, **login)
        sasl = sasl_line("SCRAM-SHA-512", USER, f"{{file: {secret}}}")
        data = group_yaml(kafka.url, "orders", "g1", tls_line(pki.crt("ca")), sasl)
        await streams(stub, "sasl-ssl", data)
        assert ("SCRAM-SHA-512", USER) in kafka.proxy.logins, kafka.proxy.logins


async def test_the_proxy_offers_sasl_and_lets_nothing_through_before_a_login() -> None:
    """The harness's own barrier, which Tansu's ``--authentication`` is not (``brokers_tansu``):
    ``ApiVersions`` lists the SASL requests; a ``Metadata`` before a login closes the connection;
    after a version-0 handshake and a bare PLAIN token (the pre-1.0 Kafka framing), it is served."""
    async with proxied_tansu(users=USERS) as kafka:
        async with kafka_wire(kafka.proxy.port) as wire:
            versions = await wire.api_versions()
            assert versions[SASL_HANDSHAKE] == (0, 1) and versions[SASL_AUTHENTICATE] == (0, 1)
            with pytest.raises((EOFError, ConnectionError)):
                await wire.metadata()
        assert kafka.proxy.refusals == ["request 3 v0 before a login"]
        async with kafka_wire(kafka.proxy.port) as wire:
            mechanism = b"PLAIN"
            answer = await wire.request(SASL_HANDSHAKE, struct.pack(">h", len(mechanism)) + mechanism)
            assert answer.int16() == 0
            token = f"\0{USER}\0{PASSWORD}".encode()
            wire._writer.write(struct.pack(">i", len(token)) + token)
            assert await wire._reader.readexactly(4) == struct.pack(">i", 0)  # an empty challenge: in
            assert [b.port for b in (await wire.metadata()).brokers] == [kafka.proxy.port]
        assert kafka.proxy.logins == [("PLAIN", USER)]
