"""What the reader makes of one fetched record: an event, or a skip that a group commits past."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition  # type: ignore[import-untyped, unused-ignore]

from common.config_yaml import MAX_EVENT_PAYLOAD_BYTES
from common.kinds import SourceContext
from common.logs import SourceLogger
from gateways.kafka import metrics
from gateways.kafka.config import parse
from gateways.kafka.reader import Reader

TP = TopicPartition("orders", 0)


def record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord("orders", 0, offset, 1_700_000_000_000, 0, None, value, None, 0, len(value), ())


def reader(name: str) -> Reader:
    ctx = SourceContext(name=name, id="1", logger=SourceLogger(logging.getLogger("test"), name))
    return Reader(ctx, parse("url: k:9092\ntopic: orders\nconsumerGroup: {groupName: g}"))


async def test_a_record_too_large_for_one_event_is_skipped_counted_and_committed_past(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = reader("big")
    assert source.commits is not None
    await source.commits.on_partitions_assigned([TP])
    held = source._event(TP, record(0, b"small"))
    assert held is not None and held.delivered is not None
    assert source._event(TP, record(1, b"x" * (MAX_EVENT_PAYLOAD_BYTES + 1))) is None
    assert metrics.sample("kafka_records_dropped_total", source="big", reason="too_large") == 1
    assert "Record orders/0/1" in caplog.text and "moves past it" in caplog.text
    held.delivered.set_result(None)  # the small one delivered: the prefix now passes both
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    assert source.commits.partitions[TP].last == 1
    assert source.commits.unsettled == 0


async def test_a_record_of_a_partition_revoked_mid_batch_is_left_to_its_new_owner() -> None:
    source = reader("revoked")
    assert source.commits is not None
    await source.commits.on_partitions_assigned([TP])
    await source.commits.on_partitions_revoked([TP])
    assert source._event(TP, record(3, b"late")) is None
