"""Bodies reach subscribers byte for byte: binary, not UTF-8, empty, compressed, at the limit; one byte
over is refused. Through the gRPC stream, and through the whole client to a real HTTP subscriber."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest

from gateways.webhook import metrics
from gateways.webhook.router import ROUTER
from tests.harness.configmaps import configmap
from tests.harness.http_sink import HttpSink
from tests.harness.processes import wait_until
from tests.webhook.conftest import Gateway, running_client, running_gateway, source_yaml

LIMIT = 64 * 1024
BODIES = {
    "every-byte-value": bytes(range(256)) * 4,
    "invalid-utf-8": b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xff\xfe\x00",
    "empty": b"",
    "exactly-the-limit": bytes((i * 7) % 256 for i in range(LIMIT)),
}


@pytest.mark.parametrize("name", BODIES)
async def test_a_body_arrives_on_the_stream_byte_for_byte(
    gateway: Gateway, http: aiohttp.ClientSession, port: int, name: str
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/b", maxBodyBytes=LIMIT))
    body = BODIES[name]
    before = metrics.sample("webhook_body_bytes_total", source="hook")

    async with http.post(source.url, data=body, headers={"Content-Type": "application/octet-stream"}) as resp:
        assert resp.status == 200

    assert (await source.next_event()).payload == body
    assert metrics.sample("webhook_body_bytes_total", source="hook") == before + len(body)


async def test_one_byte_over_the_limit_is_413_and_makes_no_event(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/b", maxBodyBytes=LIMIT))

    async with http.post(source.url, data=b"\x00" * (LIMIT + 1)) as resp:
        assert resp.status == 413
    async with http.post(source.url, data=b"after") as resp:
        assert resp.status == 200

    assert (await source.next_event()).payload == b"after"


async def test_a_compressed_body_is_forwarded_compressed_with_its_content_encoding(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/gz"))
    body = gzip.compress(b'{"big": "' + b"a" * 10_000 + b'"}')

    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with http.post(source.url, data=body, headers=headers) as resp:
        assert resp.status == 200

    event = await source.next_event()
    assert event.payload == body
    assert json.loads(event.extensions["headers"])["content-encoding"] == ["gzip"]


async def test_subscribers_get_the_exact_body_and_the_request_in_extensions_without_secrets(
    sink: HttpSink, tmp_path: Path, http: aiohttp.ClientSession, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_TOKEN", "t0k3n")
    body = BODIES["every-byte-value"] + BODIES["invalid-utf-8"]
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(hook=source_yaml(port, "/in", bearerToken="{env: WEBHOOK_TEST_TOKEN}")))
    subscribers = (f"{sink.url}/binary", f"{sink.url}/legacy?format=legacy")
    headers = {
        "Authorization": "Bearer t0k3n",
        "Cookie": "session=abc",
        "X-Hub-Signature-256": "sha256=00",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "push",
        "Content-Type": "application/vnd.example+octet-stream",
    }

    async with (
        running_gateway() as gateway,
        running_client(f"127.0.0.1:{gateway.server.port}", config, subscribers),
    ):
        await wait_until(lambda: "POST" in _routes(port), what="the client started the source")
        async with http.post(f"http://127.0.0.1:{port}/in?x=1&x=2", data=body, headers=headers) as resp:
            assert resp.status == 200
        await wait_until(
            lambda: len(sink.requests["/binary"]) == 1 and len(sink.requests["/legacy"]) == 1, what="both"
        )

    binary = sink.requests["/binary"][0]
    assert binary.body == body
    assert binary.headers["Content-Type"] == "application/vnd.example+octet-stream"
    assert binary.headers["ce-id"] == "hook:72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert binary.headers["ce-type"] == "webhook"
    assert binary.headers["ce-subject"] == "hook"
    assert binary.headers["ce-method"] == "POST"
    assert unquote(binary.headers["ce-path"]) == "/in"
    assert json.loads(unquote(binary.headers["ce-query"])) == {"x": ["1", "2"]}
    forwarded = json.loads(unquote(binary.headers["ce-headers"]))
    assert forwarded["x-github-event"] == ["push"]
    assert not {"authorization", "cookie", "x-hub-signature-256"} & set(forwarded)
    assert "t0k3n" not in str(binary.headers)
    legacy = json.loads(sink.requests["/legacy"][0].body)
    assert base64.b64decode(legacy["payload"]) == body, "a v0.11 sensor gets the raw body, as v0.11 sent it"
    assert legacy["context"]["source"]["host"] == "webhook-gateway:hook"


def _routes(port: int) -> dict[str, object]:
    return dict(ROUTER.lookup(port, "/in"))
