"""The MQTT server's Prometheus metrics, in a registry of their own (served on ``--metrics-port``).

Labels: ``source`` the event-source name (the ConfigMap key); ``reason`` why a message was dropped
(``qos0_backlog``: a QoS 0 message past the backlog while the stream was back-pressured;
``too_large``: too large for one gRPC message to the client).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

DROPPED = Counter(
    "mqtt_messages_dropped",
    "Messages lost before they became events: qos0_backlog (QoS 0 only) or too_large.",
    ["source", "reason"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "mqtt_duplicates",
    "QoS 1/2 messages the broker sent again (the DUP flag): after a reconnect, or unacknowledged.",
    ["source"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "mqtt_reconnects",
    "Times a source connected again after its connection was lost.",
    ["source"],
    registry=REGISTRY,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been counted yet): for tests and probes."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
