"""HTTP delivery tried from the outside: the real ``gateway`` processes (``gateway run webhook``, or
``gateway serve webhook`` + ``gateway client``), webhook callers whose request ids become event ids,
and subscribers written here on bare asyncio sockets that read each request by hand (strictly, as
HTTP/1.1 says) and answer it byte for byte: well, oddly or with hostility. What a test sees is what a
platform engineer's sensor would see; no HTTP library stands between the wire and the assertion."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import signal
import ssl
import time
from collections import Counter
from pathlib import Path

import pytest

from common.client.subscribers import redact
from tests.harness.gateways import Gateway
from tests.harness.http_subscribers import (
    OK,
    QUICK_STOP,
    Reader,
    Request,
    Subscriber,
    Writer,
    accept_each,
    always,
    client_log,
    delivered,
    gateway,
    post,
    reset,
    status,
    subscribers,
)
from tests.harness.ledger import Callers
from tests.harness.pki import self_signed
from tests.harness.processes import wait_until

pytestmark = pytest.mark.slow


# 1. Hostile and odd subscribers


async def test_a_subscriber_closing_idle_connections_loses_no_event(tmp_path: Path) -> None:
    """The stale-connection race: the subscriber closes a connection idle for 0.5 s, and events come
    every 0.38-0.55 s. A request that lands on a connection in the last 0.15 s before its close meets
    that close (read, then reset, unanswered), as when the close and the request cross on the wire;
    later ones find the connection closed. Every event must arrive, none be dropped or even retried
    by the lane (the wire resends a crossed request once on a new connection), on both loops."""
    crossed: dict[int, list[str]] = {}

    async def idle_closer(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        served = 0
        while True:
            idle_from = time.monotonic()
            try:
                async with asyncio.timeout(0.5):
                    first = await reader.readexactly(1)
            except TimeoutError:
                return  # idle too long: closed (FIN)
            crossing = served > 0 and time.monotonic() - idle_from > 0.35
            request = await sub.read(reader, first)
            if crossing:
                crossed.setdefault(sub.port, []).append(request.id)
                reset(writer)
                return
            served += 1
            await sub.answer(writer, request, OK, 200)

    fast, plain = Subscriber(idle_closer), Subscriber(idle_closer)
    rng = random.Random(7)
    ids = [f"e{n}" for n in range(9)]
    (tmp_path / "uvloop").mkdir()
    (tmp_path / "asyncio").mkdir()
    async with (
        subscribers(fast, plain),
        gateway(tmp_path / "uvloop", [fast.url], "answer: delivered") as (uv, uv_hook),
        gateway(tmp_path / "asyncio", [plain.url], "answer: delivered", args=["--loop", "asyncio"]) as (
            aio,
            aio_hook,
        ),
    ):
        for request_id in ids:
            await asyncio.gather(post(uv_hook, request_id), post(aio_hook, request_id))
            await asyncio.sleep(rng.uniform(0.38, 0.55))  # the pace of the events is the test
        seen = {"uvloop": (await status(uv))[fast.url], "asyncio": (await status(aio))[plain.url]}
    assert all(crossed.get(s.port) for s in (fast, plain)), f"the race was not provoked: {crossed}"
    for loop, sub in (("uvloop", fast), ("asyncio", plain)):
        assert set(sub.accepted) == set(ids), (loop, sorted(set(ids) - set(sub.accepted)))
        assert seen[loop]["delivered"] == len(ids) and seen[loop]["dropped"] == {}, (loop, seen[loop])
        assert seen[loop]["retried"] == 0, (loop, seen[loop])
        duplicates = sum(n - 1 for n in sub.ids().values())
        assert duplicates == len(crossed[sub.port]), (loop, sub.ids(), crossed[sub.port])


# 2. A ledger against a flapping subscriber


async def test_a_flapping_subscriber_gets_every_event_the_client_took_at_least_once(tmp_path: Path) -> None:
    """A pod whose subscriber accepts, then refuses connections, then answers 503 with
    ``Retry-After: 1``, then accepts again, while four webhook callers keep posting. Every event
    answered 200 (taken by the client) arrives; status tells each phase; no request follows a 503
    sooner than its Retry-After."""
    busy = asyncio.Event()

    async def flapping(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        while True:
            request = await sub.read(reader)
            if busy.is_set():
                answer = b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy"
                await sub.answer(writer, request, answer, 503)
            else:
                await sub.answer(writer, request, OK, 200)

    sub = Subscriber(flapping)
    async with subscribers(sub), gateway(tmp_path, [sub.url], pod=True) as (gw, hook):
        async with Callers(hook, count=4) as callers:
            await callers.until_answered(50)
            await sub.stop()
            await wait_until(
                lambda: refused(gw, sub), what="status says the subscriber refuses connections", timeout=5
            )
            refusing = (await status(gw))[sub.url]
            busy.set()
            await sub.start()
            await wait_until(
                lambda: sum(1 for _, c in sub.answers if c == 503) >= 2, what="two 503s", timeout=10
            )
            answering_503 = (await status(gw))[sub.url]
            busy.clear()
            await callers.until_answered(len(callers.answered) + 200, timeout=20)
        assert gw.client is not None
        gw.client.signal(signal.SIGTERM)
        assert await gw.client.exit_code() == 0
    arrived = Counter(sub.accepted)
    missing = callers.answered - set(arrived)
    assert not missing, f"{len(missing)} of {len(callers.answered)} events answered 200 never arrived"
    assert not refusing["up"] and "refused" in (refusing["last_error"] or "").lower(), refusing
    assert answering_503["connected"] and not answering_503["up"], answering_503
    assert (answering_503["last_error"] or "").startswith("HTTP 503"), answering_503
    busy_at = [t for t, code in sub.answers if code == 503]
    after = [min((r.at for r in sub.requests if r.at > t), default=t + 9) - t for t in busy_at]
    assert min(after) >= 0.95, f"a request came {min(after):.2f}s after a 503 asking for 1s"
    assert sum(arrived.values()) - len(arrived) <= 1, f"duplicates: {sum(arrived.values()) - len(arrived)}"


async def refused(gw: Gateway, sub: Subscriber) -> bool:
    state = (await status(gw))[sub.url]
    return not state["up"] and "refused" in (state["last_error"] or "").lower()


# 3. A stop while delivering to a slow subscriber


async def test_a_client_stopped_while_delivering_to_a_slow_subscriber_acknowledges_only_what_arrived(
    tmp_path: Path,
) -> None:
    """``answer: delivered``: a caller's 200 is the upstream acknowledgement. The subscriber takes
    0.3 s per event; the gateway is stopped (SIGTERM, grace 1 s) with events queued and one in
    flight. Every 200 must be an event the subscriber accepted; what was cut off is counted."""

    async def slow(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        while True:
            request = await sub.read(reader)
            await asyncio.sleep(0.3)  # the subscriber's own work
            await sub.answer(writer, request, OK, 200)

    sub = Subscriber(slow)
    hook_lines = ("answer: delivered", "answerTimeout: 30s")
    async with (
        subscribers(sub),
        gateway(tmp_path, [sub.url], *hook_lines, args=["--grace", "1"]) as (gw, hook),
        Callers(hook, count=8) as callers,
    ):
        await callers.until_answered(4)
        assert gw.client is not None
        gw.client.signal(signal.SIGTERM)
        assert await gw.client.exit_code() == 0
        await callers.stop()
        log = client_log(gw)
    unarrived = callers.answered - set(sub.accepted)
    assert not unarrived, f"answered 200 but never accepted by the subscriber: {sorted(unarrived)}"
    cut = re.search(r"Delivery stopped: (\d+) event\(s\) dropped at shutdown", log)
    assert cut is not None and int(cut.group(1)) >= 1, "the stop did not cut a delivery off"


# 4. The requests on the wire


async def test_every_request_is_valid_http_1_1_with_host_length_ce_headers_and_url_credentials(
    tmp_path: Path,
) -> None:
    """Each format's requests, read strictly by hand: the request line with the URL's path and query
    (without the client's own ``format``), Host with the port, a Content-Length that frames the body
    (the next request starts right after it), no header twice or empty, the CloudEvent attributes as
    ``ce-*`` headers in binary mode, and the URL's credentials as Basic authorization."""
    sub = Subscriber(accept_each)
    base = f"127.0.0.1:{sub.port}"
    urls = {
        "binary": f"http://sensor:p%40ss@{base}/b?x=1&format=binary",
        "structured": f"http://{base}/s?format=structured",
        "legacy": f"http://{base}/l?format=legacy",
    }
    bodies = {"e0": '{"caf\u00e9": "\u00fc"}'.encode(), "e1": b"", "e2": b"x" * 70_000}
    async with subscribers(sub), gateway(tmp_path, list(urls.values())) as (_, hook):
        await post(hook, "e0", body=bodies["e0"])
        await post(hook, "e1", body=bodies["e1"], content_type="text/plain; charset=utf-8")
        await post(hook, "e2", body=bodies["e2"], content_type="application/octet-stream")
        await wait_until(lambda: len(sub.requests) >= 9, what="three events for three subscribers")
    assert [r.problems for r in sub.requests if r.problems] == []
    by_path: dict[str, list[Request]] = {}
    for request in sub.requests:
        by_path.setdefault(request.line.split()[1], []).append(request)
    assert sorted(by_path) == ["/b?x=1", "/l", "/s"]
    for request in sub.requests:
        assert request.header("host") == base
        assert request.header("content-length") == str(len(request.body))
        assert request.header("content-type")
    binary = by_path["/b?x=1"]
    assert [r.id for r in binary] == ["e0", "e1", "e2"]
    assert [r.body for r in binary] == [bodies["e0"], bodies["e1"], bodies["e2"]]
    for request in binary:
        for attribute in ("specversion", "id", "source", "type", "subject", "time"):
            assert request.header(f"ce-{attribute}"), attribute
        assert request.header("authorization") == "Basic " + base64.b64encode(b"sensor:p@ss").decode()
    for request in by_path["/s"]:
        assert request.header("content-type") == "application/cloudevents+json; charset=utf-8"
        assert json.loads(request.body)["id"].startswith("hook:e")
    assert all(r.header("authorization") is None for r in (*by_path["/s"], *by_path["/l"]))


async def test_a_password_alone_in_the_url_still_goes_as_basic_authorization(tmp_path: Path) -> None:
    """``https://:TOKEN@host/`` (a key as the password, no user name, as ``curl -u :TOKEN``) goes as
    ``Basic base64(":TOKEN")``, as aiohttp's client sent it; without it the sensor answers 401 and
    the event is dropped as rejected."""

    async def guarded(sub: Subscriber, request: Request, writer: Writer) -> bool:
        if request.header("authorization") == "Basic " + base64.b64encode(b":s3cret").decode():
            await sub.answer(writer, request, OK, 200)
        else:
            await sub.answer(writer, request, b"HTTP/1.1 401 Who\r\nContent-Length: 0\r\n\r\n", 401)
        return True

    sub = Subscriber(always(guarded))
    url = f"http://:s3cret@127.0.0.1:{sub.port}/in"
    async with subscribers(sub), gateway(tmp_path, [url]) as (gw, hook):
        await post(hook, "e0")

        async def settled() -> bool:
            state = (await status(gw))[redact(url)]
            return bool(state["delivered"] or state["dropped"])

        await wait_until(settled, what="the event delivered or dropped")
        state = (await status(gw))[redact(url)]
    assert state["delivered"] == 1 and state["dropped"] == {}, state
    assert [r.header("authorization") for r in sub.requests] == [
        "Basic " + base64.b64encode(b":s3cret").decode()
    ], "the password was not sent"
    assert sub.accepted == ["e0"]


# 5. https


async def test_https_subscribers_are_verified_the_trusted_gets_every_event_the_untrusted_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two https subscribers with self-signed certificates, only the first trusted (``SSL_CERT_FILE``
    for the client process): the first gets every event over TLS; the second none, each attempt
    failing verification, retried, with the reason in status and the log."""
    trusted_cert, trusted_key = self_signed(tmp_path, "trusted")
    other_cert, other_key = self_signed(tmp_path, "other")

    def serving(cert: Path, key: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    trusted = Subscriber(accept_each, tls=serving(trusted_cert, trusted_key), host="localhost")
    untrusted = Subscriber(accept_each, tls=serving(other_cert, other_key))
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted_cert))  # what the client process trusts
    urls = [trusted.url, untrusted.url]
    async with subscribers(trusted, untrusted), gateway(tmp_path, urls, args=QUICK_STOP) as (gw, hook):
        await post(hook, "e0", "e1", "e2")
        await wait_until(lambda: delivered(gw, trusted, 3), what="the trusted subscriber took all")

        async def retried() -> bool:
            return bool((await status(gw))[untrusted.url]["retried"] >= 2)

        await wait_until(retried, what="the untrusted subscriber retried")
        seen = await status(gw)
        log = client_log(gw)
    assert trusted.accepted == ["e0", "e1", "e2"]
    assert trusted.requests[0].header("host") == f"localhost:{trusted.port}"
    state = seen[untrusted.url]
    assert untrusted.requests == [] and state["delivered"] == 0 and state["dropped"] == {}, state
    assert not state["up"] and state["queued"] == 3, state
    assert "CERTIFICATE_VERIFY_FAILED" in (state["last_error"] or ""), state
    assert re.search(rf"-> {re.escape(untrusted.url)}: attempt #1/inf failed.*CERTIFICATE_VERIFY_FAILED", log)
