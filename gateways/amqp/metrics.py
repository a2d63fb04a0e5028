"""The AMQP server's Prometheus metrics, in a registry of their own (served on ``--metrics-port``).

Labels: ``source`` the event-source name (the ConfigMap key); ``reason`` why a message was dropped
(``too_large``: too large for one gRPC message to the client; acked, so it is not delivered again).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

DROPPED = Counter(
    "amqp_messages_dropped",
    "Messages that could not become events: too_large.",
    ["source", "reason"],
    registry=REGISTRY,
)
ACKS = Counter(
    "amqp_acks",
    "basic.ack frames sent (each acks every message up to its delivery tag).",
    ["source"],
    registry=REGISTRY,
)
REDELIVERED = Counter(
    "amqp_redelivered",
    "Messages the broker had delivered before (the redelivered flag).",
    ["source"],
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "amqp_reconnects",
    "Times a source opened its connection again after the broker closed it.",
    ["source"],
    registry=REGISTRY,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been counted yet): for tests and probes."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
