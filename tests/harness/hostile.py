"""A seeded corpus of hostile HTTP requests for a webhook endpoint, written byte by byte and sent
over raw sockets (no HTTP client library smooths anything over).

Every request carries ``X-Corpus: <n>`` so what a subscriber receives can be matched to what was
sent. ``expect`` is the one status a case must get when the case decides it (431 for headers over
the limit, 400 for a body cut short); otherwise any 2xx or 4xx is acceptable, and every 2xx must be
delivered faithfully.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Header = tuple[bytes, bytes]

CONTENT_TYPES: tuple[bytes | None, ...] = (
    None,
    b"",
    b"application/json",
    b"application/json; charset=utf-8",
    b"APPLICATION/JSON",
    b"text/json",
    b"application/vnd.api+json",
    b"text/plain",
    b'text/plain; charset="utf-8"',
    b"image/png",
    b"application/octet-stream",
    b"application/cloudevents+json",
    b"application/cloudevents-batch+json",
    b"Application/CloudEvents+JSON; charset=utf-8",
    b"application/cloudevents",
    b"json",
    b"application/json; x",
    b"text/plain; x=\xe9",
    b"multipart/form-data; boundary=----x",
    b"application/x-www-form-urlencoded",
    b"text/plain; p=" + b"v" * 2000,
    b" application/json ",
)

NUMBERS = (
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890123456789",
    "-0",
    "0.1000000000000000055511151231257827",
    "9" * 5000,
    "1E+2",
    "2.5e-3",
)


@dataclass(frozen=True)
class Case:
    """One request of the corpus."""

    n: int
    kind: str
    """What the case tries, e.g. ``deep-json``, ``truncated``."""
    raw: bytes
    """The whole request as written to the socket."""
    body: bytes
    """The body a faithful delivery carries (what the server should take as the body)."""
    content_type: bytes | None
    """The first ``Content-Type`` value sent, if any."""
    request_id: bytes | None = None
    expect: int | None = None
    """The status this case must get, when it decides one."""
    half_close: bool = False
    """Shut the socket's write side after sending (a body cut short). The server may then close the
    connection without an answer (nobody is left to read it): the case must get ``expect`` or none."""


@dataclass
class Outcome:
    case: Case
    status: int | None
    """The response status, or None when the connection closed without one."""
    error: str = ""


@dataclass
class _Builder:
    rng: random.Random
    endpoint: str
    cases: list[Case] = field(default_factory=list)

    def add(
        self,
        kind: str,
        body: bytes,
        content_type: bytes | None = None,
        *,
        headers: Sequence[Header] = (),
        request_id: bytes | None = None,
        query: str = "",
        chunked: bool = False,
        declared: int | None = None,
        expect: int | None = None,
        half_close: bool = False,
        sent: bytes | None = None,
    ) -> None:
        n = len(self.cases)
        lines = [
            f"POST {self.endpoint}{query} HTTP/1.1".encode(),
            b"Host: gateway",
            f"X-Corpus: {n}".encode(),
        ]
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type)
        if request_id is not None:
            lines.append(b"X-Request-Id: " + request_id)
        lines += [name + b": " + value for name, value in headers]
        payload = body if sent is None else sent
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
            payload = _chunked(self.rng, payload) if sent is None else payload
        else:
            lines.append(f"Content-Length: {len(body) if declared is None else declared}".encode())
        lines.append(b"Connection: close")
        raw = b"\r\n".join(lines) + b"\r\n\r\n" + payload
        self.cases.append(Case(n, kind, raw, body, content_type, request_id, expect, half_close))


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out, at = [], 0
    while at < len(body):
        piece = body[at : at + rng.randint(1, max(1, len(body) // 3 + 1))]
        out.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        at += len(piece)
    return b"".join(out) + b"0\r\n\r\n"


def _nested(rng: random.Random, depth: int) -> bytes:
    opens = "".join(rng.choice("[{") for _ in range(depth))
    text = ""
    for bracket in reversed(opens):
        text = f"[{text}]" if bracket == "[" else f'{{"k":{text or 0}}}'
    return text.encode()


def _json_value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randint(0, 9 if depth < 4 else 5)
    if choice == 0:
        return rng.choice([True, False, None])
    if choice in (1, 2):
        return rng.choice([0, -1, 2**53 + 1, 3.5, -1e-7, 10**30])
    if choice in (3, 4, 5):
        alphabet = ["a", "é", "\u2028", "\U0001f600", '"', "\\", "\x00", "\x1f", "/", " ", "%"]
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if choice in (6, 7):
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}\u00e9": _json_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def corpus(endpoint: str, seed: int = 2026, size: int = 1000) -> list[Case]:
    """At least ``size`` hostile requests to ``endpoint``, the same for the same seed."""
    rng = random.Random(seed)
    b = _Builder(rng, endpoint)
    generators: list[Callable[[], None]] = [
        lambda: _deep(b),
        lambda: _numbers(b),
        lambda: _bytes(b),
        lambda: _controls(b),
        lambda: _valid_json(b),
        lambda: _forged(b),
        lambda: _header_tricks(b),
        lambda: _framing(b),
        lambda: _costly(b),
    ]
    while len(b.cases) < size:
        rng.choice(generators)()
    return b.cases


def _content_type(b: _Builder) -> bytes | None:
    return b.rng.choice(CONTENT_TYPES)


def _rid(b: _Builder) -> bytes:
    return f"corpus-{len(b.cases)}-{b.rng.getrandbits(32):08x}".encode()


def _deep(b: _Builder) -> None:
    depth = b.rng.choice([1, 2, 63, 64, 65, 100, 1000, 5000, 50_000])
    ct = b.rng.choice([b"application/json", None, b"text/plain"])
    b.add(f"deep-json-{depth}", _nested(b.rng, depth), ct, request_id=_rid(b))


def _numbers(b: _Builder) -> None:
    values = ",".join(b.rng.choice(NUMBERS) for _ in range(b.rng.randint(1, 4)))
    body = b.rng.choice([f'{{"v":[{values}]}}', f"[{values}]", b.rng.choice(NUMBERS)]).encode()
    b.add("numbers", body, b.rng.choice([b"application/json", b"application/json; charset=utf-8", None]))


def _bytes(b: _Builder) -> None:
    size = b.rng.choice([0, 1, 3, 100, 4096, 200_000])
    body = bytes(b.rng.getrandbits(8) for _ in range(min(size, 4096)))
    body = body * (size // max(1, len(body))) if size > 4096 else body
    b.add(f"bytes-{len(body)}", body, _content_type(b), request_id=_rid(b))


def _controls(b: _Builder) -> None:
    text = "".join(
        b.rng.choice(["\x00", "\x01", "\x7f", "\r\n", "\t", "a", "\u00ff", "\ufeff"]) for _ in range(20)
    )
    raw = b.rng.choice(
        [text.encode(), json.dumps(text).encode(), b'"' + text.encode() + b'"', b"\xef\xbb\xbf{}"]
    )
    b.add("controls", raw, b.rng.choice([b"application/json", b"text/plain", None]))


def _valid_json(b: _Builder) -> None:
    value = _json_value(b.rng)
    body = json.dumps(value, ensure_ascii=b.rng.random() < 0.5).encode()
    b.add("valid-json", body, b.rng.choice([b"application/json", b"text/json", None]), request_id=_rid(b))


def _forged(b: _Builder) -> None:
    event = {"specversion": "1.0", "id": "forged", "source": "evil", "type": "evil", "data": {"a": 1}}
    body = json.dumps(b.rng.choice([event, [event, event], {"data_base64": base64.b64encode(b"x").decode()}]))
    ct = b.rng.choice(
        [
            b"application/cloudevents+json",
            b"application/cloudevents-batch+json",
            b"APPLICATION/CLOUDEVENTS+JSON",
        ]
    )
    extra: list[Header] = []
    if b.rng.random() < 0.5:  # attributes smuggled as headers: they must stay inside ``ce-headers``
        extra = [
            (b"ce-id", b"forged"),
            (b"ce-source", b"evil"),
            (b"ce-specversion", b"1.0"),
            (b"ce-type", b"x"),
        ]
    b.add("forged", body.encode(), ct, headers=extra)


def _costly(b: _Builder) -> None:
    """Small bodies that cost a naive JSON check quadratic time (minutes for tens of KiB)."""
    n = b.rng.choice([5_000, 20_000])
    body = b.rng.choice([b"[" * 65 + b'"' + b'\\"' * n, b"[" * 65 + b'"' * n, b'["' + b"\\" * n])
    b.add("costly-json", body, b.rng.choice([b"application/json", None]), request_id=_rid(b))


def _header_tricks(b: _Builder) -> None:
    pick = b.rng.randint(0, 6)
    body = b'{"ok":true}'
    if pick == 0:  # forwarded headers over the 8 KiB a subscriber is sent at most
        b.add(
            "oversized-headers",
            body,
            b"application/json",
            headers=[(b"X-Pad-%d" % i, b"v" * 3000) for i in range(3)],
            expect=431,
        )
    elif pick == 1:  # duplicates
        b.add(
            "duplicate-headers",
            body,
            b"application/json",
            headers=[
                (b"Content-Type", b"text/plain"),
                (b"X-Request-Id", b"second"),
                (b"X-Dup", b"1"),
                (b"X-Dup", b"2"),
            ],
            request_id=_rid(b),
        )
    elif pick == 2:  # unusable ids: too long, spaces, not ASCII
        rid = b.rng.choice([b"x" * 201, b"has space", b"caf\xc3\xa9", b'"quoted"', b"%41"])
        b.add("bad-request-id", body, b"application/json", request_id=rid)
    elif pick == 3:  # values a header encoder must escape
        values = [b'"quoted"', b"100%", b"caf\xc3\xa9", b"\xe9\xff", b"a\tb", b"{}[],;"]
        b.add(
            "escaped-headers",
            body,
            b"application/json",
            headers=[(b"X-Esc-%d" % i, v) for i, v in enumerate(values)],
        )
    elif pick == 4:  # hostile query strings
        query = b.rng.choice(["?a=%00&a=%ff", "?%e9=%C3%A9&x", "?" + "q=1&" * 200, "?a=%22%25%20", "?=&&="])
        b.add("query", body, b"application/json", query=query, request_id=_rid(b))
    elif pick == 5:  # more header fields than the parser takes
        b.add(
            "too-many-headers",
            body,
            b"application/json",
            headers=[(b"X-H%d" % i, b"1") for i in range(200)],
            expect=400,
        )
    else:  # a header line with a NUL
        b.add("nul-header", body, b"application/json", headers=[(b"X-Nul", b"a\x00b")], expect=400)


def _framing(b: _Builder) -> None:
    pick = b.rng.randint(0, 3)
    body = json.dumps(_json_value(b.rng)).encode()
    if pick == 0:
        b.add("chunked", body, b"application/json", chunked=True, request_id=_rid(b))
    elif pick == 1:  # a chunk size that is not hex
        b.add(
            "bad-chunked",
            body,
            b"application/json",
            chunked=True,
            sent=b"zz\r\n" + body + b"\r\n0\r\n\r\n",
            expect=400,
        )
    elif pick == 2:  # Content-Length promises more than is sent: the rest never comes
        cut = b.rng.random() < 0.5  # half the callers then stop writing (the socket's write side shut)
        expect = 400 if cut else 408
        b.add("truncated", body + b"tail", b"application/json", sent=body, half_close=cut, expect=expect)
    else:  # Content-Length and Transfer-Encoding together
        b.add("smuggled", body, b"application/json", headers=[(b"Transfer-Encoding", b"chunked")], expect=400)


async def send(port: int, case: Case, timeout: float = 10.0) -> Outcome:
    """Write ``case`` to a new connection and read the status of the first final response."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(case.raw)
                await writer.drain()
                if case.half_close:
                    writer.write_eof()
                while True:
                    line = await reader.readline()
                    if not line:
                        return Outcome(case, None, "closed without a response")
                    status = int(line.split()[1])
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    if status != 100:
                        return Outcome(case, status)
            finally:
                writer.close()
                await writer.wait_closed()
    except (OSError, TimeoutError, ValueError, IndexError) as exc:
        return Outcome(case, None, f"{type(exc).__name__}: {exc}")


async def send_all(port: int, cases: Sequence[Case], concurrency: int = 16) -> list[Outcome]:
    """Every case, ``concurrency`` at a time; outcomes in case order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(case: Case) -> Outcome:
        async with gate:
            return await send(port, case)

    return list(await asyncio.gather(*(one(case) for case in cases)))
