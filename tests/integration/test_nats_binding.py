"""What a webhook gateway (``gateway serve`` + ``gateway client``) publishes to NATS, read off the
wire by a raw NATS subscriber (no nats-py) and checked against the CloudEvents NATS protocol binding
(1.0.3): binary mode carries every attribute as a ``ce-`` header, ``ce-datacontenttype`` included
and no ``Content-Type``; structured mode says ``Content-Type: application/cloudevents+json``."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest

from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.nats import NatsServer, nats_server
from tests.harness.processes import free_port
from tests.harness.raw_nats import RawMessage, raw_nats_subscriber

REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")


@pytest.fixture
async def nats() -> AsyncIterator[NatsServer]:
    async with nats_server(jetstream=False) as server:
        yield server


async def _deliver(tmp_path: Path, server: NatsServer, requests: list[tuple[bytes, str]]) -> list[RawMessage]:
    """POST each (body, content type) through a gateway whose subscribers are NATS in both modes;
    what a raw subscriber read, binary-mode messages first, each in order."""
    hook = free_port()
    config = tmp_path / "cm.yaml"
    config.write_text(configmap(hook=f'endpoint: /hook\nmethod: POST\nport: "{hook}"'))
    subscribers = [f"{server.url}/wire.{fmt}?format={fmt}" for fmt in ("binary", "structured")]
    async with raw_nats_subscriber(server.port, "wire.>") as reader:
        gw = Gateway(tmp_path, config, subscribers)
        try:
            await gw.start(wait_port=hook)
            async with aiohttp.ClientSession() as http:
                for body, content_type in requests:
                    headers = {"Content-Type": content_type} if content_type else {}
                    async with http.post(f"http://127.0.0.1:{hook}/hook", data=body, headers=headers) as r:
                        assert r.status == 200
            messages = await reader.wait_for(2 * len(requests), timeout=15)
        except BaseException:
            gw.dump()
            raise
        finally:
            await gw.stop()
    return sorted(messages, key=lambda m: m.subject)


async def test_binary_mode_over_nats_carries_every_attribute_as_a_ce_header_and_no_content_type(
    tmp_path: Path, nats: NatsServer
) -> None:
    messages = await _deliver(tmp_path, nats, [(b"plain words", "text/plain; charset=utf-8")])
    (binary,) = [m for m in messages if m.subject == "wire.binary"]

    names = [name.lower() for name, _ in binary.headers]
    assert all(name.startswith("ce-") for name in names), names
    assert set(REQUIRED) <= set(names)
    assert binary.values("ce-datacontenttype") == ["text/plain;%20charset=utf-8"]
    assert binary.values("Content-Type") == []
    assert binary.payload == b"plain words"
    for _, value in binary.headers:
        assert all(0x21 <= ord(c) <= 0x7E and c not in ' "' for c in value), value


async def test_structured_mode_over_nats_names_its_format_in_content_type(
    tmp_path: Path, nats: NatsServer
) -> None:
    messages = await _deliver(tmp_path, nats, [(b'{"a": 1e400}', "application/json")])
    (structured,) = [m for m in messages if m.subject == "wire.structured"]

    assert structured.headers == (("Content-Type", "application/cloudevents+json; charset=utf-8"),)
    document = json.loads(structured.payload, parse_constant=lambda name: pytest.fail(f"{name} on the wire"))
    assert document["specversion"] == "1.0"
    assert structured.payload.endswith(b',"data":{"a": 1e400}}')


async def test_a_caller_claiming_a_cloudevents_body_cannot_forge_what_a_nats_subscriber_reads(
    tmp_path: Path, nats: NatsServer
) -> None:
    forged = json.dumps({"specversion": "1.0", "id": "forged", "source": "evil", "type": "evil"}).encode()
    messages = await _deliver(tmp_path, nats, [(forged, "application/cloudevents+json")])
    binary, structured = messages

    assert binary.values("ce-datacontenttype") == ["application/octet-stream"]
    assert unquote(binary.values("ce-origcontenttype")[0]) == "application/cloudevents+json"
    assert binary.values("ce-id") != ["forged"] and binary.payload == forged
    document = json.loads(structured.payload)
    assert (document["id"], document["datacontenttype"]) != ("forged", "application/cloudevents+json")
    assert base64.b64decode(document["data_base64"]) == forged
