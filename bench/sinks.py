"""Benchmark subscribers, each run in its own process by ``bench.servers`` (``http-sink``, ``nats-sink``).

A sink takes CloudEvents in binary mode (``ce-*`` HTTP or NATS headers) and records, per event, when
it arrived (``time.time()``, after the body was read), the source (``ce-subject``), the sequence
number (the ``N`` of ``ce-id: PREFIX:N``, when the id ends in one; a Kafka event's id,
``TOPIC/PARTITION/OFFSET``, is numbered by its offset, per partition) and how long after the load
generator stamped it the event arrived. The stamp is the load generator's send time when the event
carries one, an ``X-Sent-At`` header (``time.time()`` as a decimal), either on the event itself or
among the HTTP request headers a webhook event (or the record headers a Kafka event, the headers
table an AMQP event) forwards in its ``ce-headers`` extension, or the MQTT 5 user properties an MQTT
event forwards in its ``ce-userproperties`` extension; otherwise it is ``ce-time``. An MQTT event's id
carries no number (a uuid): it is numbered by its ``x-seq`` user property, when it has one. Numbers
run per source and per id prefix (the ``PREFIX`` of ``ce-id``, e.g. one per load-generator worker):
an event whose number is not its stream's previous number plus one is an order violation (a
reorder, a duplicate or a gap).

Control, on the sink's HTTP port:

* ``GET /stats?count=N&timeout=T``: waits up to T seconds for N events in all, then answers the
  stats as JSON: ``events``, ``per_source``, ``order_violations``, ``first``/``last`` arrival,
  ``arrivals`` and ``latencies`` (seconds, in arrival order), and ``cpu_s``, the sink's own CPU
  seconds since the last reset (CPU seconds over the arrival window near 1 means the sink was the
  bottleneck).
* ``POST /reset``: forget everything (between rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from common.signals import install_signal_handlers

SENT_AT_HEADER = "x-sent-at"
"""The load generator's send time (``time.time()``, a decimal), a request header of the webhook bench."""
SEQ_PROPERTY = "x-seq"
"""The MQTT bench's message number, a user property (an MQTT event's id is a uuid)."""
FORWARDED = ("ce-headers", "ce-userproperties")
"""Extensions holding a message's own headers as JSON (``ce-userproperties``: MQTT 5's user properties)."""
KAFKA_ID = re.compile(r"(?P<partition>[A-Za-z0-9._-]+/[0-9]+)/(?P<offset>[0-9]+)")
"""The id the Kafka gateway gives a record's event (a topic name has no ``:`` or ``/``)."""


class Recorder:
    """What a sink has received since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.last: dict[str, int] = {}
        self.per_source: dict[str, int] = {}
        self.order_violations = 0
        self.unreadable = 0
        self.arrivals: list[float] = []
        self.latencies: list[float] = []
        self.cpu_base = time.process_time()
        self.target = 0
        self.reached = asyncio.Event()

    def record(self, headers: Mapping[str, str], now: float) -> None:
        source, event_id = headers.get("ce-subject"), headers.get("ce-id")
        if source is None or not event_id:
            self.unreadable += 1
            return
        prefix, _, number = event_id.rpartition(":")
        if kafka := KAFKA_ID.fullmatch(event_id):
            prefix, number = kafka["partition"], kafka["offset"]
        elif not number.isdigit() and (properties := headers.get("ce-userproperties")):
            number = next(iter(json.loads(unquote(properties)).get(SEQ_PROPERTY, [])), number)
        if number.isdigit():  # numbered: checked for order (a calendar's ids name their slot instead)
            seq, stream = int(number), f"{source}\0{prefix}"
            if seq != self.last.get(stream, -1) + 1:
                self.order_violations += 1
            self.last[stream] = seq
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self.arrivals.append(now)
        sent = _sent_at(headers)
        if sent is not None:
            self.latencies.append(now - sent)
        if self.target and len(self.arrivals) >= self.target:
            self.reached.set()

    async def stats(self, count: int, timeout: float) -> dict[str, Any]:
        if count:
            self.target = count
            if len(self.arrivals) >= count:
                self.reached.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached.wait(), timeout)
        return {
            "events": len(self.arrivals),
            "per_source": dict(sorted(self.per_source.items())),
            "order_violations": self.order_violations,
            "unreadable": self.unreadable,
            "first": self.arrivals[0] if self.arrivals else 0.0,
            "last": self.arrivals[-1] if self.arrivals else 0.0,
            "arrivals": self.arrivals,
            "latencies": self.latencies,
            "cpu_s": time.process_time() - self.cpu_base,
        }


def _sent_at(headers: Mapping[str, str]) -> float | None:
    """When the load generator sent the event (``time.time()``), or None when it carries no time."""
    stamp: Any = headers.get(SENT_AT_HEADER) or headers.get(SENT_AT_HEADER.title())
    for extension in FORWARDED:
        if stamp is None and (forwarded := headers.get(extension)):
            value = json.loads(unquote(forwarded)).get(SENT_AT_HEADER)
            # name -> values (a webhook's request headers, a Kafka record's, MQTT 5 user properties);
            # name -> value (an AMQP table)
            stamp = value if isinstance(value, str | int | float) else next(iter(value or []), None)
    if stamp is not None:
        return float(stamp)
    sent = headers.get("ce-time")
    return datetime.fromisoformat(sent).timestamp() if sent else None


def _control_routes(app: web.Application, recorder: Recorder) -> None:
    async def stats(request: web.Request) -> web.Response:
        count = int(request.query.get("count", "0"))
        timeout = float(request.query.get("timeout", "0"))
        return web.json_response(await recorder.stats(count, timeout))

    async def reset(request: web.Request) -> web.Response:
        recorder.reset()
        return web.Response(text="reset")

    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
    await runner.cleanup()


async def serve_http_sink(port: int) -> None:
    """Answer 200 to every POST /, recording it; control on the same port."""
    recorder = Recorder()

    async def event(request: web.Request) -> web.Response:
        await request.read()
        recorder.record(request.headers, time.time())
        return web.Response()

    app = web.Application()
    app.router.add_post("/", event)
    _control_routes(app, recorder)
    await _serve(app, port)


async def serve_nats_sink(port: int, url: str, prefix: str) -> None:
    """Subscribe to ``PREFIX.>`` on the NATS server at ``url``, recording each message; control on
    ``port`` (listening only once the subscription is in place at the server)."""
    import nats

    recorder = Recorder()

    async def event(msg: Any) -> None:
        recorder.record(msg.headers or {}, time.time())

    nc = await nats.connect(url, name="bench sink")
    await nc.subscribe(f"{prefix}.>", cb=event, pending_msgs_limit=0, pending_bytes_limit=0)
    await nc.flush()
    app = web.Application()
    _control_routes(app, recorder)
    try:
        await _serve(app, port)
    finally:
        await nc.close()
