"""A thousand hostile requests through a real webhook gateway (``gateway serve`` + ``gateway client``)
to subscribers in all three formats at once, judged by an independent reader.

The subscribers are one JavaScript process reading every POST with the CloudEvents SDK for
JavaScript (``tests/harness/cereader``), never the Python SDK the client encodes with. Each request
is either refused with a 4xx before any 2xx, or delivered faithfully to all three: the body byte for
byte, the attributes as the READMEs document them, an event the reader accepts and validates.
Afterwards the gateway still delivers good requests, and neither process has restarted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from tests.harness.cereader import JsReader, Record, running_js_reader
from tests.harness.configmaps import configmap
from tests.harness.gateways import Gateway
from tests.harness.hostile import Case, Outcome, corpus, send_all
from tests.harness.processes import free_port

SOURCE = "corpus"
GATEWAY_NAME = "webhook-gateway"
FORMATS = ("binary", "structured", "legacy")
GOOD = 20


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[JsReader]:
    async with running_js_reader(tmp_path) as running:
        yield running


@pytest.fixture
async def gateway(tmp_path: Path, reader: JsReader) -> AsyncIterator[tuple[Gateway, int]]:
    hook = free_port()
    config = tmp_path / "cm.yaml"
    fields = f'endpoint: /corpus\nmethod: POST\nport: "{hook}"\nmaxBodyBytes: 3145728\nreadTimeout: 1s'
    config.write_text(configmap(**{SOURCE: fields}))
    subscribers = [f"{reader.url}/{fmt}?format={fmt}" for fmt in FORMATS]
    gw = Gateway(tmp_path, config, subscribers)
    try:
        await gw.start(wait_port=hook)
        yield gw, hook
    except BaseException:
        gw.dump()
        raise
    finally:
        await gw.stop()


def _header(record: Record, name: str) -> str | None:
    return next((value for key, value in record["headers"] if key.lower() == name), None)


def _corpus_number(record: Record) -> int | None:
    """The ``X-Corpus`` number of a binary-mode delivery, read from its ``ce-headers`` attribute."""
    encoded = _header(record, "ce-headers")
    if encoded is None:
        return None
    values = json.loads(unquote(encoded)).get("x-corpus", [])
    return int(values[0]) if values else None


def _corpus_number_of_document(document: dict[str, Any]) -> int:
    """The ``X-Corpus`` number of a structured-mode delivery, from its ``headers`` attribute."""
    return int(json.loads(document["headers"])["x-corpus"][0])


def _body(record: Record) -> bytes:
    return base64.b64decode(record["body_b64"])


def _document(record: Record) -> Any:
    """A delivered JSON body, numbers kept as text (a payload may hold a 5,000-digit one)."""
    return json.loads(_body(record), parse_int=str, parse_float=str)


def _expected_id(case: Case) -> str | None:
    rid = case.request_id
    if rid is None or len(rid) > 200 or not all(0x21 <= c <= 0x7E for c in rid):
        return None
    return f"{SOURCE}:{rid.decode()}"


def _check_binary(case: Case, record: Record) -> dict[str, Any]:
    assert record["ok"], f"case {case.n} ({case.kind}): the reader refused it: {record['error']}"
    assert _body(record) == case.body, f"case {case.n} ({case.kind}): the body changed"
    (read,) = record["events"]
    assert read["valid"], f"case {case.n} ({case.kind}): {read['validation_error']}"
    # The bindings say a receiver percent-decodes ce-* header values; cloudevents 10.0.0 for
    # JavaScript does not, so that is done here.
    event = {k: unquote(v) if isinstance(v, str) else v for k, v in read.items()}
    assert (event["source"], event["type"], event["subject"]) == (GATEWAY_NAME, "webhook", SOURCE)
    if (expected := _expected_id(case)) is not None:
        assert event["id"] == expected
    sent = None if case.content_type is None else case.content_type.decode("latin-1")
    label = event.get("datacontenttype")
    assert label in (sent and sent.strip(" \t"), "application/octet-stream"), f"case {case.n}: {label!r}"
    if sent is None or "application/cloudevents" in sent.lower():
        assert label == "application/octet-stream", f"case {case.n} ({case.kind}): {label!r}"
    if label == "application/octet-stream" and sent is not None and sent.strip(" \t") != label:
        assert event.get("origcontenttype") in (None, sent.strip(" \t"))
    return event


def _check_structured(case: Case, record: Record, binary: dict[str, Any]) -> None:
    assert record["ok"], f"case {case.n} ({case.kind}): the reader refused it: {record['error']}"
    (event,) = record["events"]
    assert event["valid"], f"case {case.n} ({case.kind}): {event['validation_error']}"
    same = {
        k: v for k, v in event.items() if not k.startswith("data") and k not in ("valid", "validation_error")
    }
    assert same == {k: v for k, v in binary.items() if k in same}, f"case {case.n}: attributes differ"
    raw, document = _body(record), _document(record)
    if "data_base64" in document:
        assert base64.b64decode(document["data_base64"]) == case.body
        assert event["data_kind"] == "bytes" and base64.b64decode(event["data_b64"]) == case.body
    elif "data" in document:
        assert raw.endswith(b',"data":' + case.body + b"}"), (
            f"case {case.n}: data is not the payload's own text"
        )
        assert event["data_kind"] != "none", (
            f"case {case.n} ({case.kind}): {case.body[:80]!r} read as no data"
        )
    else:
        assert case.body == b"", f"case {case.n} ({case.kind}): data went missing"


def _check_legacy(case: Case, records: list[Record], event_id: str) -> None:
    envelopes = [_document(record) for record in records]
    assert any(base64.b64decode(e["payload"]) == case.body for e in envelopes), f"case {case.n}: no payload"
    for envelope in envelopes:
        assert envelope["context"]["eventID"] == event_id
        assert envelope["context"]["contentType"] == "application/json"


async def test_a_thousand_hostile_requests_are_each_refused_or_delivered_faithfully_in_every_format(
    gateway: tuple[Gateway, int], reader: JsReader
) -> None:
    gw, port = gateway
    cases = corpus("/corpus")
    outcomes = await send_all(port, cases)

    unanswered = [
        o
        for o in outcomes
        if (o.status is None and not o.case.half_close)
        or (o.status is not None and not (200 <= o.status < 300 or 400 <= o.status < 500))
    ]
    assert not unanswered, _describe(unanswered[:10])
    wrong = [
        o
        for o in outcomes
        if o.case.expect is not None
        and o.status != o.case.expect
        and not (o.case.half_close and o.status is None)
    ]
    assert not wrong, _describe(wrong[:10])
    accepted = [o.case for o in outcomes if o.status is not None and 200 <= o.status < 300]
    assert len(accepted) >= 600, "most of the corpus is hostile content, not framing: it must be delivered"

    records = await reader.wait_for(len(accepted) * len(FORMATS), timeout=60)
    by_path: dict[str, list[Record]] = {
        fmt: [r for r in records if r["path"] == f"/{fmt}"] for fmt in FORMATS
    }
    assert {fmt: len(rs) for fmt, rs in by_path.items()} == {fmt: len(accepted) for fmt in FORMATS}
    binary = {_corpus_number(r): r for r in by_path["binary"]}
    structured = {_corpus_number_of_document(_document(r)): r for r in by_path["structured"]}
    legacy: dict[str, list[Record]] = {}
    for r in by_path["legacy"]:  # a sender's repeated X-Request-Id repeats the id: by id, then payload
        legacy.setdefault(_document(r)["context"]["eventID"], []).append(r)
    for case in accepted:
        event = _check_binary(case, binary[case.n])
        _check_structured(case, structured[case.n], event)
        _check_legacy(case, legacy[event["id"]], event["id"])

    await _good_requests_still_arrive(gw, port, reader, len(records))


async def _good_requests_still_arrive(gw: Gateway, port: int, reader: JsReader, before: int) -> None:
    async with aiohttp.ClientSession() as http:
        for n in range(GOOD):
            headers = {"Content-Type": "application/json", "X-Request-Id": f"good-{n}"}
            async with http.post(
                f"http://127.0.0.1:{port}/corpus", data=b'{"good":true}', headers=headers
            ) as r:
                assert r.status == 200
        await reader.wait_for(before + GOOD * len(FORMATS), timeout=20)
        async with http.get(f"http://127.0.0.1:{gw.ops_port}/readyz") as r:
            status = await r.json()
    assert all(p.proc is not None and p.proc.returncode is None for p in gw.procs), "no process exited"
    node = status["nodes"][SOURCE]
    assert (node["phase"], node["restarts"]) == ("Running", 0), node


def _describe(outcomes: list[Outcome]) -> str:
    return "; ".join(f"case {o.case.n} ({o.case.kind}): {o.status} {o.error}" for o in outcomes)
