"""The Kafka gateway tested from the outside: real processes (``gateway serve kafka`` + ``gateway
client``, or ``gateway run kafka``), a real Tansu, records produced with raw Kafka wire frames
(``Produce`` v3 carrying a ``RecordBatch`` v2 built here, CRC-32C and all: no Kafka client library),
and a subscriber that is a bare asyncio HTTP/1.1 server parsing the CloudEvent headers itself.

Neither side shares code with the gateway (which uses aiokafka and aiohttp), so what the tests see is
what a platform engineer's producer and subscriber would see.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from tests.harness.brokers import tansu
from tests.harness.configmaps import configmap
from tests.harness.gateways import GATEWAY, Gateway
from tests.harness.kafka import FAST_RETRY, group_source, node, phase_is
from tests.harness.kafka_outside import (
    Loading,
    Record,
    create_topic,
    judge_ledger,
    partition_source,
    pod,
    wire_producer,
)
from tests.harness.ledger import NOTICE_RETURN
from tests.harness.processes import free_port, wait_until
from tests.harness.raw_sink import RawSink, metrics, run

pytestmark = pytest.mark.slow


async def test_a_record_whose_header_name_is_not_utf8_does_not_wedge_its_consumer_group(
    tmp_path: Path,
) -> None:
    """Kafka header names are bytes on the wire; a producer such as librdkafka can send any. aiokafka's
    record reader raises ``UnicodeDecodeError`` on such a name; the source used to fail (INTERNAL),
    restart, fetch the same batch and fail again, forever (a poison pill). Now the record is skipped
    (counted ``undecodable``) and those around it are delivered, with no restart."""
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "poison")
        gateway = pod(tmp_path, sink, g=group_source(broker.url, "poison", "poison"))
        async with wire_producer(broker.port) as wire:
            await wire.produce("poison", 0, [(b"k", b"before", [])])
            await wire.produce("poison", 0, [(b"k", b"poison", [(b"\xff\xfename", b"x")])])
            await wire.produce("poison", 0, [(b"k", b"after", [])])
        try:
            await gateway.start()
            with contextlib.suppress(AssertionError):
                await wait_until(
                    lambda: b"after" in [a.body for a in sink.arrivals], what="the record after", timeout=20
                )
            bodies = [a.body for a in sink.arrivals]
            assert bodies == [b"before", b"after"], bodies
            status = await node(gateway, "g")
            assert b"after" in bodies, (
                f"the records after a non-UTF-8 header name never arrive: got {bodies}, status {status}"
            )
            assert status.get("restarts", 0) == 0, f"the source crash-loops: {status}"
        finally:
            await gateway.stop()


async def test_a_null_consumer_group_without_a_partition_is_refused_naming_the_field_not_crash_looped(
    tmp_path: Path,
) -> None:
    """``consumerGroup:`` with nothing after it (YAML null; a mis-indented block) and no partition is
    neither a group nor a partition source. Seen: ``gateway validate`` says OK, the server's
    ValidateEventSource accepts it, then the source fails with a bare ``AssertionError()`` and is
    restarted with backoff forever. Expected: INVALID ``partition: partition must be specified``
    (as without the ``consumerGroup`` key), the other source of the ConfigMap untouched."""
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders")
        bad = f"url: {broker.url}\ntopic: orders\n{FAST_RETRY}\nconsumerGroup:"
        gateway = pod(tmp_path, sink, good=group_source(broker.url, "orders", "ok"), bad=bad)
        code, out = await run([*GATEWAY, "validate", "kafka", str(gateway.config)])
        assert "OK      good" in out
        try:
            await gateway.start()
            async with wire_producer(broker.port) as wire:
                await wire.produce("orders", 0, [(None, b"one", [])])
            await wait_until(lambda: len(sink.arrivals) == 1, what="the good source delivers", timeout=20)
            await asyncio.sleep(2)  # let the bad source be tried (and, today, fail) a few times
            status = await node(gateway, "bad")
        finally:
            await gateway.stop()
        assert code == 1 and "INVALID bad: partition: partition must be specified" in out, out
        assert "AssertionError" not in str(status.get("message")), status
        assert status.get("phase") == "Error" and "partition must be specified" in str(status.get("message"))


async def test_hostile_records_reach_an_independent_reader_as_the_readme_maps_them(tmp_path: Path) -> None:
    """Keys that are empty, binary, non-ASCII or hold a newline; tombstones; null, empty and binary
    header values; 300 headers; the content-type header in any case, valid or not; values of 3 MiB
    (delivered byte for byte) and 4 MiB (skipped, counted, committed past). Pinned as seen."""
    mib = 1 << 20
    records: list[Record] = [
        (b"", b"empty key", []),
        (b"\xff\x00\x01", b"binary key", []),
        ("clé-ü".encode(), b"non-ascii key", []),
        (b"line\nbreak", b"key with a newline", []),
        (b"t", None, []),
        (None, b"", [(b"h", None), (b"h", b""), (b"h", b"\x80\x81"), (b"trace", b"abc")]),
        (None, b"{}", [(b"CONTENT-TYPE", b"application/json")]),
        (None, b"x", [(b"content-type", b"not a type")]),
        (None, b"many", [(f"h{i}".encode(), b"v") for i in range(300)]),
        (None, b"B" * (3 * mib), []),
        (None, b"C" * (4 * mib), []),
        (None, b"last", []),
    ]
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "hostile")
        metrics_port = free_port()
        gateway = pod(tmp_path, sink, g=group_source(broker.url, "hostile", "hostile"))
        gateway.server_args = ("--metrics-port", str(metrics_port))
        try:
            await gateway.start()
            async with wire_producer(broker.port) as wire:
                for record in records:
                    await wire.produce("hostile", 0, [record])
            await wait_until(lambda: len(sink.arrivals) >= 11, what="every deliverable record", timeout=30)
            text = await metrics(metrics_port)
        finally:
            await gateway.stop()
    got = sink.arrivals
    assert [a.id for a in got] == [f"hostile/0/{n}" for n in (*range(10), 11)]
    assert [a.ce("offset") for a in got] == [str(n) for n in (*range(10), 11)]
    assert {a.ce("partition") for a in got} == {"0"}
    assert all(a.ce("eventsubject") == "hostile" and a.ce("subject") == "g" for a in got)
    assert all(a.ce("timestamp") and int(a.ce("timestamp") or 0) > 1_600_000_000_000 for a in got)
    empty, binary, accented, newline, tombstone, headers, json_ct, bad_ct, many, big, last = got
    assert empty.ce("partitionkey") == "" and empty.ce("partitionkeyb64") is None
    assert binary.ce("partitionkeyb64") == base64.b64encode(b"\xff\x00\x01").decode()
    assert accented.ce("partitionkey") == "clé-ü"
    assert newline.ce("partitionkeyb64") == base64.b64encode(b"line\nbreak").decode()
    assert tombstone.body == b"" and tombstone.ce("partitionkey") == "t"
    assert json.loads(headers.ce("headers") or "") == {"h": ["", "", "base64:gIE="], "trace": ["abc"]}
    assert json_ct.headers.get("content-type") == "application/json" and json_ct.body == b"{}"
    assert bad_ct.headers.get("content-type") == "application/octet-stream"
    assert len(json.loads(many.ce("headers") or "")) == 300
    assert big.body == b"B" * (3 * mib) and last.body == b"last"
    assert 'kafka_records_dropped_total{reason="too_large",source="g"} 1.0' in text
    assert all(
        "partitionkey" not in a.headers and "partitionkeyb64" not in a.headers for a in (headers, last)
    )


async def test_readyz_says_error_within_5s_of_a_broker_stop_and_running_once_it_is_back(
    tmp_path: Path,
) -> None:
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders")
        gateway = pod(
            tmp_path,
            sink,
            g=group_source(broker.url, "orders", "g"),
            p=partition_source(broker.url, "orders"),
        )
        try:
            await gateway.start()
            for name in ("g", "p"):
                await wait_until(
                    partial(phase_is, gateway, name, "Running"), what=f"{name} running", timeout=20
                )
            await broker.stop()
            stopped = time.monotonic()
            for name in ("g", "p"):
                await wait_until(
                    partial(phase_is, gateway, name, "Error", f"no broker of {broker.url} answers"),
                    what=f"{name}: Error naming the broker",
                    timeout=6,
                )
            assert time.monotonic() - stopped < 6
            await broker.start()
            await create_topic(broker, "orders")  # memory-only: the broker came back empty
            for name in ("g", "p"):
                await wait_until(
                    partial(phase_is, gateway, name, "Running", "reconnected 1 time"),
                    what=f"{name}: Running again",
                    timeout=15,
                )
            async with wire_producer(broker.port) as wire:
                await wire.produce("orders", 0, [(None, b"after", [])])
            await wait_until(
                lambda: any(a.body == b"after" for a in sink.arrivals), what="delivery resumes", timeout=20
            )
        finally:
            await gateway.stop()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_gateway_run_kafka_stopped_under_load_then_started_again_loses_no_stored_record(
    tmp_path: Path, stop: signal.Signals
) -> None:
    bound = 100
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders", 3)
        gateway = pod(
            tmp_path,
            sink,
            standalone=True,
            client_args=("--max-unacked-events", str(bound)),
            orders=group_source(broker.url, "orders", "run"),
        )
        try:
            async with Loading(broker.port, "orders", 3) as loading:
                for round_ in range(2):
                    await gateway.start()
                    await wait_until(
                        partial(_more, sink, len(set(sink.ids())) + 300), what="300 more", timeout=60
                    )
                    assert gateway.client is not None
                    gateway.client.signal(stop)
                    code = await gateway.client.exit_code()
                    assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), (
                        f"round {round_}: exit {code}"
                    )
                    gateway.client.log.rename(tmp_path / f"run-{round_}.log")
                await gateway.start()
            stored = loading.stored
            await wait_until(lambda: set(stored) <= set(sink.ids()), what="every stored record", timeout=90)
        finally:
            await gateway.stop()
        # a clean stop commits what was delivered: no repeats; each kill -9 at most the window
        print(judge_ledger(stored, sink.ids(), 0 if stop == signal.SIGTERM else 2 * bound))


PHASE = 3.0
"""Seconds of each of the flaky subscriber's phases: failing, slow, down."""


@pytest.mark.timeout(240)
async def test_a_subscriber_answering_500_then_slow_then_down_loses_nothing_and_keeps_partition_order(
    tmp_path: Path,
) -> None:
    bound = 50
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders", 2)
        gateway = pod(
            tmp_path,
            sink,
            client_args=("--max-unacked-events", str(bound), *NOTICE_RETURN),
            orders=group_source(broker.url, "orders", "flaky"),
        )
        try:
            async with Loading(broker.port, "orders", 2) as loading:
                await gateway.start()
                await wait_until(lambda: len(sink.arrivals) >= 100, what="100 delivered", timeout=30)
                sink.status = 500
                await asyncio.sleep(PHASE)  # the subscriber failing for a while, the producer going on
                sink.status, sink.delay = 200, 0.02
                await asyncio.sleep(PHASE)  # slow for a while
                sink.delay = 0.0
                await sink.close()
                await asyncio.sleep(PHASE)  # down for a while
                await sink.reopen()
            stored = loading.stored
            await wait_until(lambda: set(stored) <= set(sink.ids()), what="every stored record", timeout=90)
        finally:
            await gateway.stop()
    assert sink.refused > 0
    # No crash; the one request the sink had read but not answered when it went down comes again.
    print(judge_ledger(stored, sink.ids(), 1))


@pytest.mark.timeout(120)
async def test_two_sources_in_one_group_share_the_partitions_and_removing_one_hands_them_over(
    tmp_path: Path,
) -> None:
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders", 4)
        a, b = group_source(broker.url, "orders", "shared"), group_source(broker.url, "orders", "shared")
        gateway = pod(tmp_path, sink, a=a, b=b + "\n# the same group, another key")
        try:
            async with Loading(broker.port, "orders", 4) as loading:
                await gateway.start()
                await wait_until(
                    lambda: {a.ce("subject") for a in sink.arrivals} == {"a", "b"},
                    what="both members deliver",
                    timeout=30,
                )
                both = broker.connections()
                gateway.config.write_text(configmap(a=a))
                await wait_until(lambda: _gone(gateway, "b"), what="b removed", timeout=20)
                removed_at = len(sink.arrivals)
                await wait_until(lambda: len(sink.arrivals) > removed_at + 200, what="a reads on", timeout=30)
            stored = loading.stored
            await wait_until(lambda: set(stored) <= set(sink.ids()), what="every stored record", timeout=60)
            after = broker.connections()
        finally:
            await gateway.stop()
    late = {x.ce("partition") for x in sink.arrivals[removed_at + 50 :] if x.ce("subject") == "a"}
    assert late == {"0", "1", "2", "3"}, f"a took every partition over, got {late}"
    assert after < both, f"b's connections closed: {both} with both, {after} after"
    print(judge_ledger(stored, sink.ids(), 1000))


def _more(sink: RawSink, wanted: int) -> bool:
    return len(set(sink.ids())) >= wanted


async def _gone(gateway: Gateway, source: str) -> bool:
    return await node(gateway, source) == {}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", ["client", "server"])
async def test_sigterm_of_the_client_or_the_server_alone_under_load_loses_nothing_and_repeats_nothing(
    tmp_path: Path, victim: str
) -> None:
    """README: a drained source hands on what it fetched, waits for its acknowledgement, commits, then
    leaves its group; a clean stop loses nothing. So a SIGTERM, then a start again, repeats nothing."""
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "orders", 3)
        gateway = pod(tmp_path, sink, orders=group_source(broker.url, "orders", f"term-{victim}"))
        try:
            async with Loading(broker.port, "orders", 3) as loading:
                await gateway.start()
                for round_ in range(2):
                    await wait_until(
                        partial(_more, sink, len(set(sink.ids())) + 300), what="300 more", timeout=60
                    )
                    proc = gateway.client if victim == "client" else gateway.server
                    assert proc is not None
                    proc.signal(signal.SIGTERM)
                    assert await proc.exit_code() == 0
                    if victim == "client":
                        await gateway.start_client(f"client-{round_ + 2}.log")
                    else:
                        await gateway.start_server(f"server-{round_ + 2}.log")
                    await gateway.ready()
            stored = loading.stored
            await wait_until(lambda: set(stored) <= set(sink.ids()), what="every stored record", timeout=90)
        finally:
            await gateway.stop()
        print(judge_ledger(stored, sink.ids(), 0))


async def test_records_larger_than_the_byte_window_still_pass_one_at_a_time(tmp_path: Path) -> None:
    """``--max-unacked-bytes 1000`` and records of 3,000 bytes: each alone exceeds the bound, and the
    source must still hand them on one at a time rather than stall its partition."""
    async with tansu() as broker, RawSink() as sink:
        await create_topic(broker, "big")
        gateway = pod(
            tmp_path,
            sink,
            client_args=("--max-unacked-bytes", "1000", "--max-unacked-events", "2"),
            g=group_source(broker.url, "big", "bytes"),
        )
        try:
            await gateway.start()
            async with wire_producer(broker.port) as wire:
                for n in range(20):
                    await wire.produce("big", 0, [(None, bytes([65 + n]) * 3000, [])])
            await wait_until(lambda: len(sink.arrivals) >= 20, what="every record", timeout=30)
        finally:
            await gateway.stop()
    assert [a.body[:1] for a in sink.arrivals] == [bytes([65 + n]) for n in range(20)]
