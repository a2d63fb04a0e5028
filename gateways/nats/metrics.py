"""The NATS server's Prometheus metrics, in a registry of their own (served on ``--metrics-port``).

Labels: ``source`` the event-source name (the ConfigMap key), ``reason`` why a message was dropped
(``slow_consumer``: core NATS delivered faster than the stream took, past the subscription's pending
limits; ``too_large``: a message too large for one gRPC message to the client), ``outcome`` what a
JetStream message was answered (``ack``: delivered; ``nak``: not delivered, so redelivered at once;
``term``: it can never be delivered; ``in_progress``: still held, its ack wait restarted).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

DROPPED = Counter(
    "nats_messages_dropped",
    "Messages lost before they became events: slow_consumer (core NATS only: dropped by the NATS "
    "client past its pending limits while the stream was back-pressured) or too_large.",
    ["source", "reason"],
    registry=REGISTRY,
)
ANSWERS = Counter(
    "nats_jetstream_answers",
    "JetStream acknowledgements sent, by outcome: ack, nak, term, in_progress.",
    ["source", "outcome"],
    registry=REGISTRY,
)
REDELIVERED = Counter(
    "nats_jetstream_redelivered",
    "JetStream messages that arrived more than once (a delivery count above 1).",
    ["source"],
    registry=REGISTRY,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been counted yet): for tests and probes."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
