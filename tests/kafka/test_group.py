"""A consumer group shared by two sources on a real Tansu: partitions split, handed over on a stop,
and nothing in flight for a revoked partition committed or lost."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]

from common.rpc import eventing_pb2
from gateways.kafka import metrics
from tests.harness.brokers import Tansu
from tests.harness.processes import wait_until
from tests.kafka.conftest import create_topic, group_yaml, payloads
from tests.nats.conftest import ack, drain, open_stream, start

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def holdings(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """Each source's partitions as the group last gave them (its log line)."""
    held: dict[str, str] = {}
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("The group gave this source partitions "):
            held[getattr(record, "source", "")] = message.removeprefix(
                "The group gave this source partitions "
            )
    return held


async def test_two_sources_of_one_group_split_the_partitions_and_unacknowledged_records_move_over(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await create_topic(broker, "orders", partitions=2)
    data = group_yaml(broker.url, "orders", "shared")
    first, first_reader = await open_stream(stub, start("first", data, acknowledges=True))
    second, second_reader = await open_stream(stub, start("second", data, acknowledges=True))
    await wait_until(
        lambda: {h.count(",") for h in holdings(caplog).values()} == {0} and len(holdings(caplog)) == 2,
        what="the group's two members holding a partition each",
        timeout=30,
    )
    for n in range(10):
        await producer.send_and_wait("orders", f"p{n % 2}-{n}".encode(), partition=n % 2)
    # Both members read; which partition each holds is the group's choice.
    got_first = await first_reader.events(5)
    got_second = await second_reader.events(5)
    partitions = (
        {e.extensions["partition"] for e in got_first},
        {e.extensions["partition"] for e in got_second},
    )
    assert len(partitions[0]) == 1 and len(partitions[1]) == 1 and partitions[0] != partitions[1], partitions
    await second.write(ack(*(e.sequence for e in got_second)))
    # The first acknowledges only two of its five, then stops: its partition goes to the second, which
    # reads the three unacknowledged ones again (never committed), and none of the acknowledged two.
    await first.write(ack(got_first[0].sequence, got_first[1].sequence))
    await wait_until(
        lambda: metrics.sample("kafka_offset_commits_total", source="first", outcome="ok") >= 1,
        what="the first source's commit",
    )
    first.cancel()
    # A rebalance on Tansu waits for the gone member's session (1.5 s) and a join: allow for it.
    moved: list[eventing_pb2.Event] = []
    while len(moved) < 3:
        message = await second_reader.message(timeout=30)
        assert message is not None and message.HasField("event"), message
        moved.extend(message.event.batch or (message.event,))
    assert payloads(moved) == payloads(got_first[2:])
    second.cancel()


async def test_a_drained_source_ends_its_stream_after_what_it_holds_and_commits_what_was_acknowledged(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    for n in range(3):
        await producer.send_and_wait("orders", f"r{n}".encode(), partition=0)
    data = group_yaml(broker.url, "orders", "g")
    call, reader = await open_stream(stub, start("orders", data, acknowledges=True))
    events = await reader.events(3)
    await call.write(drain())
    await call.write(ack(*(e.sequence for e in events)))
    end = await asyncio.wait_for(reader.until_end(), 20)
    assert end.reason, end
    await call.done_writing()
    for n in range(3, 5):
        await producer.send_and_wait("orders", f"r{n}".encode(), partition=0)
    again, reader = await open_stream(stub, start("orders-again", data, acknowledges=True))
    assert payloads(await reader.events(2)) == ["r3", "r4"]
    again.cancel()
