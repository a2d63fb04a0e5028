"""The Kafka server's Prometheus metrics, in a registry of their own (served on ``--metrics-port``).

Labels: ``source`` the event-source name (the ConfigMap key); ``reason`` why a record was dropped
(``too_large``: too large for one gRPC message to the client; ``undecodable``: a header name that is
not UTF-8, which the client library cannot read; either is settled, so its group moves past it);
``outcome`` of an offset commit (``ok``, ``failed``: retried with the next).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

DROPPED = Counter(
    "kafka_records_dropped",
    "Records that could not become events: too_large, undecodable.",
    ["source", "reason"],
    registry=REGISTRY,
)
COMMITS = Counter(
    "kafka_offset_commits",
    "Offset commits of consumer-group sources, by outcome: ok, failed (retried with the next).",
    ["source", "outcome"],
    registry=REGISTRY,
)
PAUSED = Gauge(
    "kafka_fetching_paused",
    "1 while a source has paused fetching because it holds its client's window of unsettled events.",
    ["source"],
    registry=REGISTRY,
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been counted yet): for tests and probes."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
