"""HTTP delivery tried from the outside, the answers: the real ``gateway`` processes against
subscribers that answer oddly or with hostility, byte for byte (``tests.harness.http_subscribers``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from tests.harness.http_subscribers import (
    OK,
    QUICK_STOP,
    Reader,
    Request,
    Serve,
    Subscriber,
    Writer,
    always,
    client_log,
    delivered,
    first_try,
    gateway,
    post,
    reset,
    rss_kib,
    status,
    subscribers,
)
from tests.harness.processes import wait_until
from tests.harness.raw_sink import metrics

pytestmark = pytest.mark.slow


async def garbage(sub: Subscriber, request: Request, writer: Writer) -> bool:
    writer.write(b"HELLO\r\n\r\n")
    return False


async def endless_head(sub: Subscriber, request: Request, writer: Writer) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
    for _ in range(64):  # 256 KiB of one header, far past the 64 KiB the client reads
        writer.write(b"a" * 4096)
        await writer.drain()
    return False


async def reset_mid_answer(sub: Subscriber, request: Request, writer: Writer) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await writer.drain()
    await asyncio.sleep(0.05)  # the first bytes reach the client before the reset
    reset(writer)
    return False


async def reset_unanswered(sub: Subscriber, request: Request, writer: Writer) -> bool:
    reset(writer)
    return False


async def close_after_each(sub: Subscriber, request: Request, writer: Writer) -> bool:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    await sub.answer(writer, request, answer, 200)
    return False


async def http_10(sub: Subscriber, request: Request, writer: Writer) -> bool:
    await sub.answer(writer, request, b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until the close", 200)
    return False


async def informational_first(sub: Subscriber, request: Request, writer: Writer) -> bool:
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.02)  # each answer in its own segment
    writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.02)
    await sub.answer(writer, request, b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 202)
    return True


async def stray_second_answer(sub: Subscriber, request: Request, writer: Writer) -> bool:
    await sub.answer(writer, request, OK, 200)
    await asyncio.sleep(0.1)  # a second, unsolicited answer, after the client took the first
    writer.write(b"HTTP/1.1 500 Again\r\nContent-Length: 0\r\n\r\n")
    return True


async def huge_body(sub: Subscriber, request: Request, writer: Writer) -> bool:
    size, chunk = 24 << 20, b"z" * (1 << 16)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    sub.answers.append((time.monotonic(), 200))
    sub.accepted.append(request.id)
    return True


async def too_many_requests(sub: Subscriber, request: Request, writer: Writer) -> bool:
    answer = b"HTTP/1.1 429 Slow\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
    await sub.answer(writer, request, answer, 429)
    return True


async def test_hostile_answers_are_retried_until_accepted_while_the_client_keeps_running(
    tmp_path: Path,
) -> None:
    """One subscriber per odd or hostile answer, each to an event's first arrival (later arrivals get
    a plain 200), and a slowloris that answers its first request one byte a second. The client must
    keep running, retry every fault (no event dropped), log each fault for what it is, end with every
    subscriber up and its counts right, and keep its memory bounded (72 MiB of answer bodies read)."""
    faulty = {
        "garbage": (Subscriber(first_try(garbage)), "unreadable answer"),
        "endless head": (Subscriber(first_try(endless_head)), "longer than 65536 bytes"),
        "reset mid-answer": (Subscriber(first_try(reset_mid_answer)), "was cut short"),
        "reset unanswered": (Subscriber(first_try(reset_unanswered)), "ConnectionResetError"),
        "429 Retry-After": (Subscriber(first_try(too_many_requests)), "HTTP 429"),
    }
    fine = {
        "Connection: close": Subscriber(always(close_after_each)),
        "HTTP/1.0": Subscriber(always(http_10)),
        "100 and 103 first": Subscriber(always(informational_first)),
        "a second answer": Subscriber(first_try(stray_second_answer)),
        "huge body": Subscriber(always(huge_body)),
    }
    first = asyncio.Event()

    async def slowloris(sub: Subscriber, reader: Reader, writer: Writer) -> None:
        while True:
            request = await sub.read(reader)
            if not first.is_set():  # only the very first request: each costs the client 10 s
                first.set()
                for byte in OK:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(1)  # one byte a second is the point
            await sub.answer(writer, request, OK, 200)

    slow = Subscriber(slowloris)
    everyone = [*(s for s, _ in faulty.values()), *fine.values(), slow]
    ids = ["e0", "e1", "e2"]
    async with subscribers(*everyone), gateway(tmp_path, [s.url for s in everyone]) as (gw, hook):
        before = rss_kib(gw)
        await post(hook, *ids)
        for sub in everyone:
            await wait_until(partial(delivered, gw, sub, len(ids)), what=f"{sub.url} took all", timeout=25)
        grew = rss_kib(gw) - before
        seen = await status(gw)
        assert gw.client is not None and gw.client.proc is not None
        assert gw.client.proc.returncode is None
        log = client_log(gw)
    for name, sub in [*((n, s) for n, (s, _) in faulty.items()), *fine.items(), ("slowloris", slow)]:
        state = seen[sub.url]
        assert set(sub.accepted) >= set(ids), (name, sub.accepted)
        assert (state["delivered"], state["dropped"], state["queued"]) == (len(ids), {}, 0), (name, state)
        assert state["up"] and state["last_error"] is None, (name, state)
        assert all(not r.problems for r in sub.requests), (name, [r.problems for r in sub.requests])
    for name, (sub, logged) in faulty.items():
        assert seen[sub.url]["retried"] >= 1, (name, seen[sub.url])
        assert re.search(rf"-> {re.escape(sub.url)}: attempt #1/inf failed.*{re.escape(logged)}", log), name
    assert re.search(rf"-> {re.escape(slow.url)}: attempt #1/inf failed.*no answer within 10s", log)
    polite = faulty["429 Retry-After"][0]
    waits = [min(r.at for r in polite.requests if r.at > t) - t for t, code in polite.answers if code == 429]
    assert len(waits) == len(ids) and min(waits) >= 0.95, f"Retry-After: 1 not honoured: {waits}"
    assert fine["huge body"].requests and grew < 48 * 1024, f"the client grew by {grew} KiB"


async def test_statuses_that_refuse_an_event_drop_it_counted_and_logged_and_the_next_goes_on(
    tmp_path: Path,
) -> None:
    """400, 413 (with a 5 MB body) and a redirect refuse the event they answer: it is dropped as
    ``rejected`` (never resent), counted in ``gateway_events_dropped_total`` and logged with its id;
    the events around it are delivered."""

    def refusing(answer: bytes, code: int) -> Serve:
        async def respond(sub: Subscriber, request: Request, writer: Writer) -> bool:
            if request.id == "e1":
                await sub.answer(writer, request, answer, code)
            else:
                await sub.answer(writer, request, OK, 200)
            return True

        return always(respond)

    big = 5_000_000
    subs = {
        400: Subscriber(refusing(b"HTTP/1.1 400 Bad\r\nContent-Length: 7\r\n\r\nnot you", 400)),
        413: Subscriber(refusing(b"HTTP/1.1 413 Big\r\nContent-Length: %d\r\n\r\n" % big + b"z" * big, 413)),
        307: Subscriber(refusing(b"HTTP/1.1 307 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", 307)),
    }
    async with subscribers(*subs.values()), gateway(tmp_path, [s.url for s in subs.values()]) as (gw, hook):
        await post(hook, "e0", "e1", "e2")
        for sub in subs.values():
            await wait_until(partial(delivered, gw, sub, 2), what=f"{sub.url} took e0 and e2")
        seen = await status(gw)
        text = await metrics(gw.ops_port)
        log = client_log(gw)
    for code, sub in subs.items():
        assert sub.accepted == ["e0", "e2"], (code, sub.accepted)
        assert [r.id for r in sub.requests] == ["e0", "e1", "e2"], (code, "a refused event was resent")
        assert seen[sub.url]["dropped"] == {"rejected": 1}, (code, seen[sub.url])
        labels = f'reason="rejected",source="hook",subscriber="{sub.url}"'
        assert f"gateway_events_dropped_total{{{labels}}} 1.0" in text, code
        dropped = rf"Dropped 1 event\(s\) for {re.escape(sub.url)} \(rejected: HTTP {code}.*hook:e1"
        assert re.search(dropped, log), code


async def test_a_subscriber_that_refuses_an_event_after_a_retry_is_not_reported_down(tmp_path: Path) -> None:
    """A 503 and then, on the retry, a 400: the event is dropped and nothing is left to retry, so the
    subscriber, which answers, is up, as one that answered the 400 at once is."""

    async def busy_then_no(sub: Subscriber, request: Request, writer: Writer) -> bool:
        first = sub.tries(request) == 1
        answer = b"HTTP/1.1 503 Busy\r\n" if first else b"HTTP/1.1 400 No\r\n"
        await sub.answer(writer, request, answer + b"Content-Length: 0\r\n\r\n", 503 if first else 400)
        return True

    async def no(sub: Subscriber, request: Request, writer: Writer) -> bool:
        await sub.answer(writer, request, b"HTTP/1.1 400 No\r\nContent-Length: 0\r\n\r\n", 400)
        return True

    retried, control = Subscriber(always(busy_then_no)), Subscriber(always(no))
    async with subscribers(retried, control), gateway(tmp_path, [retried.url, control.url]) as (gw, hook):
        await post(hook, "e0")

        async def both_dropped() -> bool:
            seen = await status(gw)
            return all(seen[s.url]["dropped"] == {"rejected": 1} for s in (retried, control))

        await wait_until(both_dropped, what="the event dropped for both")
        seen = await status(gw)
        text = await metrics(gw.ops_port)
    assert seen[control.url]["up"], seen[control.url]
    assert seen[retried.url]["queued"] == 0
    assert seen[retried.url]["up"], f"up is false with nothing to retry: {seen[retried.url]}"
    assert f'gateway_subscriber_up{{subscriber="{retried.url}"}} 1.0' in text


async def test_answers_with_bare_lf_lines_or_a_folded_header_are_accepted_once_not_resent_forever(
    tmp_path: Path,
) -> None:
    """Answers HTTP/1.1 lets a client read (RFC 9112 2.2: a bare LF may end a line; 5.2: a user agent
    replaces an obs-fold with a space), and that aiohttp's client, which delivered before, read: a 200
    so written is the subscriber taking the event. Taking it for a transport fault resends the event
    forever (the subscriber takes it again each time) and holds up every event behind it."""
    variants = {
        "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        "a header line ending in LF": b"HTTP/1.1 200 OK\r\nServer: x\nContent-Length: 0\r\n\r\n",
        "an obs-fold": b"HTTP/1.1 200 OK\r\nX-Note: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        "a space after the chunk size": (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n"
        ),
    }

    def answering(data: bytes) -> Serve:
        async def respond(sub: Subscriber, request: Request, writer: Writer) -> bool:
            await sub.answer(writer, request, data, 200)
            return True

        return always(respond)

    subs = {name: Subscriber(answering(data)) for name, data in variants.items()}
    urls = [s.url for s in subs.values()]
    async with subscribers(*subs.values()), gateway(tmp_path, urls, args=QUICK_STOP) as (gw, hook):
        await post(hook, "e0", "e1")

        async def all_delivered() -> bool:
            seen = await status(gw)
            return all(seen[s.url]["delivered"] == 2 for s in subs.values())

        with contextlib.suppress(AssertionError):
            await wait_until(all_delivered, what="every subscriber took both", timeout=4)
        seen = await status(gw)
    wrong = {
        name: (seen[sub.url]["delivered"], seen[sub.url]["last_error"], dict(sub.ids()))
        for name, sub in subs.items()
        if seen[sub.url]["delivered"] != 2 or sub.ids() != Counter({"e0": 1, "e1": 1})
    }
    assert not wrong, f"(delivered, last_error, arrivals) where the 200s were not taken: {wrong}"
