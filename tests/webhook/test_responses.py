"""Every answer a webhook gives, over real HTTP to a real gateway server whose stream is read over gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateways.webhook import metrics
from gateways.webhook.auth import sign
from tests.harness.processes import free_port
from tests.webhook.conftest import Gateway, source_yaml
from tests.webhook.rawhttp import exchange, post, read_response

SECRET = "It's a Secret to Everybody"


async def test_a_post_is_answered_200_and_its_event_carries_body_headers_and_query(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/push"))
    headers = {"Content-Type": "application/json", "X-Request-Id": "r-1", "X-GitHub-Event": "push"}

    async with http.post(source.url + "?ref=main&ref=dev", data=b'{"a":1}', headers=headers) as resp:
        assert resp.status == 200
        assert await resp.text() == "request successfully processed\n"

    event = await source.next_event()
    assert event.name == "hook"
    assert event.payload == b'{"a":1}'
    assert event.id == "hook:r-1"
    assert event.content_type == "application/json"
    assert event.time.endswith("Z")
    assert event.extensions["method"] == "POST"
    assert event.extensions["path"] == "/push"
    assert json.loads(event.extensions["query"]) == {"ref": ["main", "dev"]}
    assert json.loads(event.extensions["headers"])["x-github-event"] == ["push"]


async def test_an_unknown_path_is_404_and_a_trailing_slash_makes_another_path(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/push"))
    before = metrics.sample("webhook_responses_total", port=str(port), code="404")

    for path in ("/pull", "/push/", "/"):
        async with http.post(f"http://127.0.0.1:{port}{path}", data=b"x") as resp:
            assert resp.status == 404, path

    assert metrics.sample("webhook_responses_total", port=str(port), code="404") == before + 3
    assert source.events.empty()


async def test_a_wrong_method_is_405_with_allow_naming_every_method_the_path_takes(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    await gateway.start("post", source_yaml(port, "/items", "POST"))
    await gateway.start("put", source_yaml(port, "/items", "PUT"))

    async with http.get(f"http://127.0.0.1:{port}/items") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST, PUT"


async def test_two_sources_on_one_path_get_only_their_own_methods_events(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    post_source = await gateway.start("post", source_yaml(port, "/items", "POST"))
    put_source = await gateway.start("put", source_yaml(port, "/items", "PUT"))

    async with http.put(put_source.url, data=b"put-body") as resp:
        assert resp.status == 200
    async with http.post(post_source.url, data=b"post-body") as resp:
        assert resp.status == 200

    assert (await put_source.next_event()).payload == b"put-body"
    assert (await post_source.next_event()).payload == b"post-body"
    assert put_source.events.empty() and post_source.events.empty()


async def test_the_same_path_on_two_ports_reaches_two_sources(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    first = await gateway.start("first", source_yaml(free_port(), "/same"))
    second = await gateway.start("second", source_yaml(free_port(), "/same"))

    async with http.post(second.url, data=b"2") as resp:
        assert resp.status == 200
    async with http.post(first.url, data=b"1") as resp:
        assert resp.status == 200

    assert (await first.next_event()).payload == b"1"
    assert (await second.next_event()).payload == b"2"


async def test_a_declared_body_over_the_limit_is_413_before_the_body_is_sent(
    gateway: Gateway, port: int
) -> None:
    await gateway.start("hook", source_yaml(port, "/up", maxBodyBytes=10))

    response = await exchange(port, post("/up", length=11))

    assert response is not None and response.status == 413
    assert response.headers["connection"] == "close"


async def test_a_chunked_body_over_the_limit_is_413_as_it_streams_in(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/up", maxBodyBytes=100_000))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 10_000

    async with http.post(source.url, data=chunks()) as resp:
        assert resp.status == 413
    assert source.events.empty()


async def test_a_missing_bearer_token_is_401_with_a_challenge_and_a_wrong_one_403(
    gateway: Gateway, http: aiohttp.ClientSession, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_TOKEN", "right-token")
    source = await gateway.start("hook", source_yaml(port, "/auth", bearerToken="{env: WEBHOOK_TEST_TOKEN}"))
    wrong = metrics.sample("webhook_auth_failures_total", source="hook", credential="bearer", reason="wrong")

    async with http.post(source.url, data=b"x") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="webhook"'
    async with http.post(source.url, data=b"x", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 403
    async with http.post(source.url, data=b"ok", headers={"Authorization": "Bearer right-token"}) as resp:
        assert resp.status == 200

    event = await source.next_event()
    assert event.payload == b"ok"
    assert "authorization" not in json.loads(event.extensions["headers"])
    assert source.events.empty(), "refused requests made no events"
    assert (
        metrics.sample("webhook_auth_failures_total", source="hook", credential="bearer", reason="wrong")
        == wrong + 1
    )


async def test_a_bearer_token_from_a_file_is_read_again_when_the_file_is_replaced(
    gateway: Gateway, http: aiohttp.ClientSession, port: int, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    source = await gateway.start("hook", source_yaml(port, "/auth", bearerToken=f"{{file: {token}}}"))
    async with http.post(source.url, headers={"Authorization": "Bearer first"}) as resp:
        assert resp.status == 200

    (tmp_path / "next").write_text("second\n")
    (tmp_path / "next").replace(token)

    async with http.post(source.url, headers={"Authorization": "Bearer first"}) as resp:
        assert resp.status == 403
    async with http.post(source.url, headers={"Authorization": "Bearer second"}) as resp:
        assert resp.status == 200


async def test_an_hmac_signature_is_checked_over_the_raw_body_and_never_forwarded(
    gateway: Gateway, http: aiohttp.ClientSession, port: int, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text(SECRET)
    signature = f"{{secret: {{file: {tmp_path / 'secret'}}}}}"
    source = await gateway.start("github", source_yaml(port, "/gh", signature=signature))
    body = b'{"zen":"Keep it logically awesome."}'
    header = "X-Hub-Signature-256"

    async with http.post(source.url, data=body) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'HMAC-SHA256 header="X-Hub-Signature-256"'
    async with http.post(source.url, data=body, headers={header: sign(body + b" ", SECRET.encode())}) as resp:
        assert resp.status == 403
    async with http.post(source.url, data=body, headers={header: "not-a-signature"}) as resp:
        assert resp.status == 403
    async with http.post(source.url, data=body, headers={header: sign(body, SECRET.encode())}) as resp:
        assert resp.status == 200

    event = await source.next_event()
    assert event.payload == body
    assert header.lower() not in json.loads(event.extensions["headers"])
    assert source.events.empty()


async def test_a_custom_signature_header_is_checked_and_stripped(
    gateway: Gateway, http: aiohttp.ClientSession, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_HMAC", SECRET)
    signature = "{secret: {env: WEBHOOK_TEST_HMAC}, header: X-Signature}"
    source = await gateway.start("custom", source_yaml(port, "/c", signature=signature))

    async with http.post(source.url, data=b"b", headers={"X-Signature": sign(b"b", SECRET.encode())}) as resp:
        assert resp.status == 200

    assert "x-signature" not in json.loads((await source.next_event()).extensions["headers"])


async def test_requests_over_the_rate_limit_are_429_with_retry_after(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start(
        "hook", source_yaml(port, "/r", rateLimit="{requestsPerSecond: 0.5, burst: 2}")
    )
    before = metrics.sample("webhook_rate_limited_total", source="hook")

    statuses = []
    for _ in range(3):
        async with http.post(source.url, data=b"x") as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")

    assert statuses == [200, 200, 429]
    assert retry_after == "2"
    assert metrics.sample("webhook_rate_limited_total", source="hook") == before + 1


async def test_a_body_slower_than_the_read_timeout_is_408(gateway: Gateway, port: int) -> None:
    await gateway.start("hook", source_yaml(port, "/slow", readTimeout="200ms"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/slow", b"part", length=100))

    response = await read_response(reader)

    assert response.status == 408
    writer.close()
    await writer.wait_closed()


async def test_more_than_256_kib_of_headers_is_431(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/h"))
    headers = {f"X-Big-{i}": "v" * 8000 for i in range(40)}

    async with http.post(source.url, data=b"x", headers=headers) as resp:
        assert resp.status == 431


async def test_headers_a_subscriber_would_receive_as_over_8_kib_are_431_before_any_200(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/h"))

    async with http.post(source.url, data=b"x", headers={f"X-Pad-{i}": "v" * 3000 for i in range(3)}) as resp:
        assert resp.status == 431
        assert "at most 8192" in await resp.text()
    async with http.post(source.url + "?q=" + "z" * 4000, data=b"x", headers={"X-Pad": "v" * 4500}) as resp:
        assert resp.status == 431, "the query counts too"
    async with http.post(source.url, data=b"x", headers={f"X-Pad-{i}": "v" * 3000 for i in range(2)}) as resp:
        assert resp.status == 200
    assert len((await source.next_event()).extensions["headers"]) > 6000
    assert source.events.empty(), "the refused request became no event"


async def test_the_header_limit_counts_bytes_as_percent_encoded_for_the_subscriber(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/h"))
    spaced = "a b " * 1000  # 4,000 characters, 6,000 once each space is written %20

    async with http.post(source.url, data=b"x", headers={"X-1": spaced, "X-2": "v" * 3000}) as resp:
        assert resp.status == 431
    async with http.post(source.url, data=b"x", headers={"X-1": "a_b_" * 1000, "X-2": "v" * 3000}) as resp:
        assert resp.status == 200


async def test_max_header_bytes_raises_the_limit_for_one_endpoint(
    gateway: Gateway, http: aiohttp.ClientSession, port: int
) -> None:
    source = await gateway.start("hook", source_yaml(port, "/h", maxHeaderBytes=32768))

    async with http.post(source.url, data=b"x", headers={f"X-Pad-{i}": "v" * 3000 for i in range(6)}) as resp:
        assert resp.status == 200
    async with http.post(
        source.url, data=b"x", headers={f"X-Pad-{i}": "v" * 3000 for i in range(11)}
    ) as resp:
        assert resp.status == 431


async def test_expect_100_continue_is_answered_only_when_the_request_would_be_taken(
    gateway: Gateway, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_TOKEN", "t")
    source = await gateway.start("hook", source_yaml(port, "/e", bearerToken="{env: WEBHOOK_TEST_TOKEN}"))
    expect = {"Expect": "100-continue", "Authorization": "Bearer t"}

    refused = await exchange(port, post("/e", length=5, headers={**expect, "Authorization": "Bearer no"}))
    assert refused is not None and refused.status == 403

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/e", length=5, headers=expect))
    interim = await read_response(reader)
    writer.write(b"hello")
    final = await read_response(reader)
    writer.close()
    await writer.wait_closed()

    assert (interim.status, final.status) == (100, 200)
    assert (await source.next_event()).payload == b"hello"


@pytest.mark.parametrize(
    ("request_line", "headers", "expected"),
    [
        pytest.param("GET /o", {"Authorization": "Bearer wrong"}, 405, id="wrong-method-and-bad-auth-is-405"),
        pytest.param(
            "POST /o",
            {"Authorization": "Bearer wrong", "X-Burst": "1"},
            429,
            id="over-rate-and-bad-auth-is-429",
        ),
        pytest.param(
            "POST /o",
            {"Authorization": "Bearer wrong", "Content-Length": "99"},
            413,
            id="over-size-and-bad-auth-is-413",
        ),
        pytest.param(
            "POST /o",
            {"Authorization": "Bearer wrong", "X-Hub-Signature-256": "sha256=0"},
            403,
            id="bad-auth-and-bad-signature-is-the-bearer-403",
        ),
        pytest.param(
            "POST /o",
            {"Authorization": "Bearer t", "X-Hub-Signature-256": "sha256=0"},
            403,
            id="good-auth-and-bad-signature-is-403",
        ),
    ],
)
async def test_the_checks_run_in_order_path_method_rate_size_auth_body_signature(
    gateway: Gateway,
    port: int,
    monkeypatch: pytest.MonkeyPatch,
    request_line: str,
    headers: dict[str, str],
    expected: int,
) -> None:
    monkeypatch.setenv("WEBHOOK_TEST_TOKEN", "t")
    config = source_yaml(
        port,
        "/o",
        bearerToken="{env: WEBHOOK_TEST_TOKEN}",
        signature="{secret: {env: WEBHOOK_TEST_TOKEN}}",
        rateLimit="{requestsPerSecond: 0.01, burst: 1}",
        maxBodyBytes=10,
    )
    await gateway.start("ordered", config)
    if headers.pop("X-Burst", None):
        spent = await exchange(port, post("/o", b"x"))
        assert spent is not None and spent.status == 401, (
            "the one token is spent on an unauthenticated request"
        )
    method, path = request_line.split()
    fields = {"Host": "h", "Content-Length": "1", **headers}
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    body = b"x" if fields["Content-Length"] == "1" else b""

    response = await exchange(port, raw.encode() + body)

    assert response is not None and response.status == expected


async def test_the_http_parsers_400s_are_counted_with_every_other_answer(gateway: Gateway, port: int) -> None:
    await gateway.start("hook", source_yaml(port, "/h"))

    def counted() -> float:
        return (
            metrics.REGISTRY.get_sample_value("webhook_responses_total", {"port": str(port), "code": "400"})
            or 0.0
        )

    before = counted()
    for raw in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",  # TLS to a plain port
        b"POST /h HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ):
        answer = await exchange(port, raw)
        assert answer is None or answer.status == 400
    assert counted() == before + 3


async def test_answer_delivered_refuses_to_start_for_a_client_that_cannot_acknowledge(
    gateway: Gateway, port: int
) -> None:
    with pytest.raises(AssertionError) as refused:
        await gateway.start("e2e", source_yaml(port, "/e", answer="delivered"))
    assert "INVALID_ARGUMENT" in str(refused.value)
    assert "answer: delivered needs a gateway client that acknowledges" in str(refused.value)


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"answer": "eventually"}, "answer"), ({"answerTimeout": "5s"}, "answerTimeout")],
)
def test_answer_fields_that_cannot_work_are_refused_naming_the_field(
    extra: dict[str, str], field: str
) -> None:
    from common.errors import ConfigError
    from gateways.webhook.config import parse

    with pytest.raises(ConfigError) as refused:
        parse(source_yaml(1, "/e", **extra))
    assert field in refused.value.problems
