"""Records of a real Tansu broker streamed by the Kafka gateway server, as a client reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped, unused-ignore]

from common.server import metrics as server_metrics
from gateways.kafka import metrics
from tests.harness.brokers import Tansu
from tests.harness.processes import wait_until
from tests.kafka.conftest import create_topic, group_yaml, payloads, source_yaml
from tests.nats.conftest import ack, open_stream, spec, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


async def no_source_running() -> None:
    """Until the server has closed every stream (a cancelled one ends a moment later)."""
    await wait_until(lambda: server_metrics.SOURCES_RUNNING._value.get() == 0, what="every source stopped")


async def produce(producer: AIOKafkaProducer, topic: str, *values: str, partition: int = 0) -> None:
    for value in values:
        await producer.send_and_wait(topic, value.encode(), partition=partition)


async def test_a_group_source_streams_every_record_in_order_with_its_metadata(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    headers = [("content-type", b"text/plain"), ("trace", b"\xff\x00")]
    for n in range(20):
        await producer.send_and_wait("orders", f"r{n}".encode(), key=b"k1", partition=0, headers=headers)
    call, reader = await open_stream(
        stub, start("orders", group_yaml(broker.url, "orders", "g1"), acknowledges=True)
    )
    events = await reader.events(20)
    assert payloads(events) == [f"r{n}" for n in range(20)]
    first = events[0]
    assert (first.id, first.subject, first.content_type) == ("orders/0/0", "orders", "text/plain")
    assert first.extensions["partition"] == "0" and first.extensions["offset"] == "0"
    assert first.extensions["partitionkey"] == "k1"
    assert first.extensions["headers"] == '{"content-type":["text/plain"],"trace":["base64:/wA="]}'
    assert first.time.endswith("Z") or first.time.endswith("+00:00")
    call.cancel()


async def test_offsets_are_committed_only_up_to_the_first_unacknowledged_record(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    await produce(producer, "orders", *(f"r{n}" for n in range(10)))
    data = group_yaml(broker.url, "orders", "g1")
    call, reader = await open_stream(stub, start("orders", data, acknowledges=True))
    events = await reader.events(10)
    # Acknowledged out of order: 0, 1, 3 and 4; 2 is not, so the group's offset stops at 2.
    await call.write(ack(*(events[n].sequence for n in (0, 1, 3, 4))))
    await wait_until(
        lambda: metrics.sample("kafka_offset_commits_total", source="orders", outcome="ok") >= 1,
        what="a commit",
    )
    call.cancel()
    await no_source_running()
    again, reader = await open_stream(stub, start("orders", data, acknowledges=True))
    assert payloads(await reader.events(8)) == [f"r{n}" for n in range(2, 10)]
    again.cancel()


async def test_without_a_group_the_partition_is_read_from_its_newest_offset_as_v0_11_did(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    await produce(producer, "orders", "before-1", "before-2")
    call, reader = await open_stream(
        stub, start("p", source_yaml(broker.url, "orders", 'partition: "0"'), state=True)
    )
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await produce(producer, "orders", "after-1", "after-2")
    assert await take(reader, 2) == ["after-1", "after-2"]
    call.cancel()


async def test_a_partition_the_topic_does_not_have_is_reported_and_retried(
    stub: EventingAsyncStub, broker: Tansu
) -> None:
    await create_topic(broker, "orders")
    call, reader = await open_stream(
        stub, start("p", source_yaml(broker.url, "orders", 'partition: "5"'), state=True)
    )
    state = await take_state(reader, timeout=20)
    assert state == (
        "state DISCONNECTED 0 event source 'p': partition 5 is not available (topic 'orders' has: 0)"
    ), state
    call.cancel()


async def test_a_broker_outage_shows_in_the_state_and_delivery_resumes_after_it(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    data = group_yaml(broker.url, "orders", "g1")
    call, reader = await open_stream(stub, start("orders", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await produce(producer, "orders", "before")
    assert await take(reader, 1) == ["before"]
    await broker.stop()
    down = await take_state(reader, timeout=10)
    assert down.startswith(f"state DISCONNECTED 0 no broker of {broker.url} answers"), down
    await broker.start()  # memory-only: it comes back empty, the topic is made again by the produce
    assert await take_state(reader, timeout=20) == "state CONNECTED 1"
    await produce(producer, "orders", "after")
    seen = await take(reader, 1)
    assert seen[-1] == "after", seen
    call.cancel()


async def test_stopping_a_source_closes_its_connections_to_the_broker(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    await produce(producer, "orders", "before")  # the producer's own connections are all open now
    baseline = broker.connections()
    call, reader = await open_stream(
        stub, start("orders", group_yaml(broker.url, "orders", "g1"), state=True)
    )
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    assert await take(reader, 1) == ["before"]
    assert broker.connections() > baseline
    call.cancel()
    await wait_until(lambda: broker.connections() == baseline, what="the source's connections closed")


async def test_at_the_window_the_source_pauses_fetching_and_resumes_once_half_is_acknowledged(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    await produce(producer, "orders", *(f"r{n}" for n in range(200)))
    data = group_yaml(broker.url, "orders", "g1")
    call, reader = await open_stream(stub, start("orders", data, acknowledges=True, window=10))
    events = await reader.events(10)
    assert await reader.nothing_more(0.5)
    await wait_until(
        lambda: metrics.sample("kafka_fetching_paused", source="orders") == 1, what="fetching paused"
    )
    await call.write(ack(*(e.sequence for e in events)))
    more = await reader.events(10)
    assert payloads(more) == [f"r{n}" for n in range(10, 20)]
    call.cancel()


async def test_a_v0_11_client_streams_and_its_group_commits_once_written(
    stub: EventingAsyncStub, broker: Tansu, producer: AIOKafkaProducer
) -> None:
    await create_topic(broker, "orders")
    await produce(producer, "orders", "a", "b", "c")
    call = stub.StartEventSource(spec("orders", group_yaml(broker.url, "orders", "g1")))
    seen: list[str] = []
    async for event in call:
        seen.append(event.payload.decode())
        if len(seen) == 3:
            break
    assert seen == ["a", "b", "c"]
    await wait_until(
        lambda: metrics.sample("kafka_offset_commits_total", source="orders", outcome="ok") >= 1,
        what="a commit once written",
    )
    call.cancel()
