"""TLS to a real nats-server that requires it and verifies client certificates (files from openssl)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest

from gateways.nats import connection
from tests.nats.conftest import broker_with, open_stream, source_yaml, start
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="no openssl to make certificates with")


def certificate(folder: Path, name: str, *extra: str) -> None:
    """``<name>.key`` and ``<name>.crt`` in ``folder``: the CA's own (no ``extra``), or one it signs."""
    assert OPENSSL is not None
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    cmd = [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cmd += ["-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}", *extra]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    certificate(tmp_path, "ca")
    signed = ["-CA", str(tmp_path / "ca.crt"), "-CAkey", str(tmp_path / "ca.key")]
    leaf = ["-addext", "basicConstraints=critical,CA:FALSE"]
    certificate(tmp_path, "server", *signed, *leaf, "-addext", "subjectAltName=IP:127.0.0.1")
    certificate(tmp_path, "client", *signed, *leaf)
    return tmp_path


async def test_a_source_with_the_ca_and_a_client_certificate_connects_over_tls(
    stub: EventingAsyncStub, pki: Path
) -> None:
    tls = ["--tls", "--tlscert", str(pki / "server.crt"), "--tlskey", str(pki / "server.key")]
    tls += ["--tlsverify", "--tlscacert", str(pki / "ca.crt")]
    async with broker_with(*tls) as broker:
        files = f"tls: {{ca: {pki / 'ca.crt'}, cert: {pki / 'client.crt'}, key: {pki / 'client.key'}}}"
        call, reader = await open_stream(stub, start("secure", source_yaml(broker.url, "secure", files)))
        await broker.subscribed("secure", "secure")
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        publisher = await nats.connect(broker.url, tls=context)
        await publisher.publish("secure", b"over tls")
        assert [e.payload for e in await reader.events(1)] == [b"over tls"]
        await publisher.close()
        call.cancel()

        anonymous = f"tls: {{ca: {pki / 'ca.crt'}}}"
        call, reader = await open_stream(
            stub, start("anon", source_yaml(broker.url, "x", anonymous), state=True)
        )
        refused = await take_state(reader)
        assert refused.startswith(f"state DISCONNECTED 0 cannot connect to {broker.url}: "), refused
        call.cancel()


async def test_a_server_certificate_from_an_unknown_ca_is_refused(
    stub: EventingAsyncStub, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 1.0)  # bounds the attempt nats-py lets hang
    tls = ["--tls", "--tlscert", str(pki / "server.crt"), "--tlskey", str(pki / "server.key")]
    async with broker_with(*tls) as broker:
        call, reader = await open_stream(
            stub, start("mitm", source_yaml(broker.url, "x", "tls: {}"), state=True)
        )
        refused = await take_state(reader)
        assert "CERTIFICATE_VERIFY_FAILED" in refused, refused
        call.cancel()
