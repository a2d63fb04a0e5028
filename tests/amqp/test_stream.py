"""Messages of a real RabbitMQ streamed by the AMQP gateway server, as a client reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateways.amqp import metrics
from tests.amqp.conftest import publish, publisher, source_yaml
from tests.harness.brokers import RabbitMQ
from tests.harness.processes import wait_until
from tests.kafka.conftest import payloads
from tests.kafka.test_stream import no_source_running
from tests.nats.conftest import ack, open_stream, start
from tests.nats.test_core import take
from tests.nats.test_jetstream import take_state

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


async def test_a_durable_queue_streams_messages_in_order_with_their_metadata(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    data = source_yaml(broker.url, exchange, "orders.#", f"queueDeclare: {{name: {queue}}}")
    call, reader = await open_stream(stub, start("orders", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    connection, declared = await publisher(broker.url, exchange)
    await publish(
        declared,
        "orders.eu",
        *(f"m{n}" for n in range(10)),
        message_id="same",
        content_type="text/plain",
        headers={"team": "eu"},
    )
    events = await reader.events(10)
    assert payloads(events) == [f"m{n}" for n in range(10)]
    first = events[0]
    assert (first.id, first.subject, first.content_type) == ("orders:same", "orders.eu", "text/plain")
    assert first.extensions["exchange"] == exchange and first.extensions["redelivered"] == "false"
    assert first.extensions["headers"] == '{"team":"eu"}'
    await call.write(ack(*(e.sequence for e in events)))
    call.cancel()
    await connection.close()


async def test_unacknowledged_messages_are_delivered_again_flagged_and_acknowledged_ones_are_not(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    data = source_yaml(broker.url, exchange, "k", f"queueDeclare: {{name: {queue}}}")
    call, reader = await open_stream(stub, start("q", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    connection, declared = await publisher(broker.url, exchange)
    await publish(declared, "k", *(f"m{n}" for n in range(6)))
    events = await reader.events(6)
    # Acknowledged out of order: 0, 1, 3; the broker can be told only of 0 and 1 (acks are in order).
    await call.write(ack(events[0].sequence, events[1].sequence, events[3].sequence))
    await wait_until(lambda: metrics.sample("amqp_acks_total", source="q") >= 1, what="an ack")
    call.cancel()
    await no_source_running()
    again, reader = await open_stream(stub, start("q", data, acknowledges=True))
    redelivered = await reader.events(4)
    assert payloads(redelivered) == ["m2", "m3", "m4", "m5"]
    assert {e.extensions["redelivered"] for e in redelivered} == {"true"}
    again.cancel()
    await connection.close()


async def test_without_a_queue_declared_an_exclusive_queue_sees_only_what_is_published_while_it_is_bound(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, _ = names
    connection, declared = await publisher(broker.url, exchange)
    await publish(declared, "k", "before")  # no queue is bound yet: the broker drops it, as v0.11 lost it
    call, reader = await open_stream(stub, start("v011", source_yaml(broker.url, exchange, "k"), state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    await publish(declared, "k", "after")
    assert await take(reader, 1) == ["after"]
    call.cancel()
    await connection.close()


async def test_stopping_a_source_closes_its_connection_to_the_broker(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    await wait_until(lambda: broker.connections() == 0, what="no connections left by earlier tests")
    data = source_yaml(broker.url, exchange, "k", f"queueDeclare: {{name: {queue}}}")
    call, reader = await open_stream(stub, start("closing", data, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    assert broker.connections() == 1
    call.cancel()
    await wait_until(lambda: broker.connections() == 0, what="the source's connection closed")


async def test_a_deleted_queue_is_reported_and_declared_again_with_no_empty_events(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    data = source_yaml(broker.url, exchange, "k", f"queueDeclare: {{name: {queue}}}")
    call, reader = await open_stream(stub, start("deleted", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    connection, declared = await publisher(broker.url, exchange)
    channel = await connection.channel()
    await channel.queue_delete(queue)
    down = await take_state(reader, timeout=10)
    assert down.startswith("state DISCONNECTED 0"), down
    assert await take_state(reader, timeout=20) == "state CONNECTED 1"
    await publish(declared, "k", "after")
    seen = await take(reader, 1)
    assert seen == ["after"], seen  # nothing empty came in between
    call.cancel()
    await connection.close()


async def test_a_queue_that_exists_with_other_arguments_is_refused_in_status_not_crashed(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    connection, _ = await publisher(broker.url, exchange)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True, arguments={"x-max-length": 10})
    data = source_yaml(
        broker.url, exchange, "k", f"queueDeclare: {{name: {queue}, arguments: {{x-max-length: 99}}}}"
    )
    call, reader = await open_stream(stub, start("clash", data, state=True))
    state = await take_state(reader, timeout=20)
    assert state.startswith("state DISCONNECTED 0") and "PRECONDITION_FAILED" in state, state
    assert "declaring" in state or "queue" in state, state
    call.cancel()
    await connection.close()


async def test_a_message_too_large_for_one_event_is_dropped_counted_and_acked(
    stub: EventingAsyncStub, broker: RabbitMQ, names: tuple[str, str]
) -> None:
    exchange, queue = names
    data = source_yaml(broker.url, exchange, "k", f"queueDeclare: {{name: {queue}}}")
    call, reader = await open_stream(stub, start("big", data, acknowledges=True, state=True))
    assert await take_state(reader, timeout=20) == "state CONNECTED 0"
    connection, declared = await publisher(broker.url, exchange)
    await publish(declared, "k", "x" * (5 * 1024 * 1024), "small")
    (event,) = await reader.events(1)
    assert event.payload == b"small"
    assert metrics.sample("amqp_messages_dropped_total", source="big", reason="too_large") == 1
    await call.write(ack(event.sequence))
    await wait_until(lambda: metrics.sample("amqp_acks_total", source="big") >= 1, what="the ack of both")
    call.cancel()
    await no_source_running()
    queue_state = await (await connection.channel()).declare_queue(queue, durable=True, passive=True)
    assert queue_state.declaration_result.message_count == 0
    await connection.close()
