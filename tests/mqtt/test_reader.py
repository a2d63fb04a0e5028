"""What the reader does with messages: acknowledgements in arrival order whatever order events settle
in, and a QoS 0 backlog bounded, its drops counted."""

from __future__ import annotations

import asyncio
import logging

import paho.mqtt.client as mqtt
import pytest

from common.kinds import SourceContext
from common.logs import SourceLogger
from gateways.mqtt import metrics
from gateways.mqtt.binding import MqttMessage, to_event
from gateways.mqtt.reader import QOS0_BACKLOG, Acks, Reader


def message(mid: int, qos: int = 1, payload: bytes = b"x") -> mqtt.MQTTMessage:
    found = mqtt.MQTTMessage(mid=mid, topic=b"t")
    found.qos, found.payload = qos, payload
    return found


async def test_acknowledgements_go_in_arrival_order_whatever_order_events_settle_in() -> None:
    sent: list[tuple[int, int]] = []
    acks = Acks(lambda mid, qos: sent.append((mid, qos)), lambda: None)
    futures = [acks.hold(message(mid, qos)) for mid, qos in ((7, 1), (3, 2), (9, 1))]
    futures[2].set_result(None)
    futures[1].set_result(None)
    await asyncio.sleep(0)
    assert sent == []  # the first one is not delivered yet
    futures[0].set_result(None)
    await asyncio.sleep(0)
    assert sent == [(7, 1), (3, 2), (9, 1)]


async def test_an_event_not_delivered_is_never_acknowledged_nor_those_after_it() -> None:
    sent: list[tuple[int, int]] = []
    acks = Acks(lambda mid, qos: sent.append((mid, qos)), lambda: None)
    first, second = acks.hold(message(1)), acks.hold(message(2))
    first.set_exception(RuntimeError("the stream ended first"))
    second.set_result(None)
    await asyncio.sleep(0)
    assert sent == []


async def test_a_qos_0_backlog_past_its_bound_drops_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = SourceContext(name="flood", id="1", logger=SourceLogger(logging.getLogger("test"), "flood"))
    reader = Reader(ctx)
    for _ in range(QOS0_BACKLOG + 5):
        reader.deliver(message(0, qos=0))
    assert len(reader.inbox) == QOS0_BACKLOG
    assert metrics.sample("mqtt_messages_dropped_total", source="flood", reason="qos0_backlog") == 5
    assert caplog.text.count("QoS 0 message(s)") == 1


def test_mqtt_5_properties_become_the_content_type_and_user_properties() -> None:
    event = to_event(
        "s",
        MqttMessage(
            "a/b",
            b"{}",
            qos=1,
            retain=True,
            content_type="application/json",
            user_properties=(("k", "1"), ("k", "2")),
        ),
        new_id=lambda: "fresh",
    )
    assert (event.id, event.subject, event.content_type) == ("s:fresh", "a/b", "application/json")
    assert event.extensions == {
        "qos": "1",
        "retain": "true",
        "dup": "false",
        "userproperties": '{"k":["1","2"]}',
    }
