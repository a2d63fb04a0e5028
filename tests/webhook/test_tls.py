"""TLS on a webhook port with a self-signed certificate made here; a replaced certificate is served to the
next connection without a restart; files that do not load stop the source with a reason worth retrying."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from common.configmap import EventSourceSpec
from tests.harness.pki import self_signed
from tests.webhook.conftest import Gateway, source_yaml

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture
def pair_maker(tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    return lambda name: self_signed(tmp_path, name)


def client_context(*certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


async def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a new connection to ``port`` is shown."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return bytes(der)


def der_of(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


async def test_a_tls_endpoint_takes_https_posts(
    gateway: Gateway, port: int, pair_maker: Callable[[str], tuple[Path, Path]]
) -> None:
    cert, key = pair_maker("first")
    source = await gateway.start(
        "secure", source_yaml(port, "/tls", serverCertPath=str(cert), serverKeyPath=str(key))
    )
    connector = aiohttp.TCPConnector(ssl=client_context(cert))

    async with (
        aiohttp.ClientSession(connector=connector) as https,
        https.post(f"https://localhost:{port}/tls", data=b"over tls") as resp,
    ):
        assert resp.status == 200

    assert (await source.next_event()).payload == b"over tls"


async def test_replacing_the_certificate_files_serves_the_new_certificate_to_the_next_connection(
    gateway: Gateway, port: int, pair_maker: Callable[[str], tuple[Path, Path]], tmp_path: Path
) -> None:
    first_cert, first_key = pair_maker("first")
    second_cert, second_key = pair_maker("second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first_cert, cert)
    shutil.copy(first_key, key)
    await gateway.start("secure", source_yaml(port, "/tls", serverCertPath=str(cert), serverKeyPath=str(key)))
    trust = client_context(first_cert, second_cert)
    assert await served_certificate(port, trust) == der_of(first_cert)

    shutil.copy(second_key, tmp_path / "staged.key")
    shutil.copy(second_cert, tmp_path / "staged.crt")
    os.replace(tmp_path / "staged.key", key)
    os.replace(tmp_path / "staged.crt", cert)

    assert await served_certificate(port, trust) == der_of(second_cert)


async def test_a_half_replaced_pair_keeps_the_previous_certificate_in_service(
    gateway: Gateway, port: int, pair_maker: Callable[[str], tuple[Path, Path]], tmp_path: Path
) -> None:
    first_cert, first_key = pair_maker("first")
    second_cert, _ = pair_maker("second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first_cert, cert)
    shutil.copy(first_key, key)
    await gateway.start("secure", source_yaml(port, "/tls", serverCertPath=str(cert), serverKeyPath=str(key)))

    shutil.copy(second_cert, tmp_path / "staged.crt")
    os.replace(tmp_path / "staged.crt", cert)  # the new certificate, the old key: they do not match

    assert await served_certificate(port, client_context(first_cert, second_cert)) == der_of(first_cert)


async def test_tls_files_that_do_not_exist_end_the_stream_unavailable_with_the_reason(
    gateway: Gateway, port: int, tmp_path: Path
) -> None:
    data = source_yaml(
        port, "/tls", serverCertPath=str(tmp_path / "no.crt"), serverKeyPath=str(tmp_path / "no.key")
    )
    call = gateway.stub.StartEventSource(EventSourceSpec("secure", data).to_proto())

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(5):
            async for _ in call:
                pass

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "cannot load the TLS certificate" in (caught.value.details() or "")
