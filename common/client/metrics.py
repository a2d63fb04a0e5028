"""The client's Prometheus metrics, in one registry served on ``/metrics``.

Labels: ``source`` is the event-source name, ``subscriber`` the subscriber URL without credentials.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "gateway_events_received", "Events read off the gateway server's streams.", ["source"], registry=REGISTRY
)
EVENTS_DELIVERED = Counter(
    "gateway_events_delivered", "Events a subscriber accepted.", ["source", "subscriber"], registry=REGISTRY
)
DELIVERY_RETRIES = Counter(
    "gateway_delivery_retries",
    "Delivery attempts that failed and were retried.",
    ["source", "subscriber"],
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "gateway_events_dropped",
    "Events given up on: rejected (permanent 4xx), too_large, queue_full, retries_exhausted, "
    "unencodable (could not be written in the subscriber's format), shutdown.",
    ["source", "subscriber", "reason"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "gateway_delivery_latency_seconds",
    "From reading an event off its stream to a subscriber accepting it.",
    ["subscriber"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "gateway_delivery_queue_depth", "Events waiting for a subscriber.", ["subscriber"], registry=REGISTRY
)
SUBSCRIBER_UP = Gauge(
    "gateway_subscriber_up",
    "1 while a subscriber is reachable and its last delivery attempt did not fail to be retried; else 0.",
    ["subscriber"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "gateway_subscriber_last_success_timestamp_seconds",
    "When a subscriber last accepted an event (Unix time); 0 before the first.",
    ["subscriber"],
    registry=REGISTRY,
)
SOURCE_CONNECTED = Gauge(
    "gateway_source_connected",
    "1 while a source's stream is open and its own connection (to its broker) is up; else 0.",
    ["source"],
    registry=REGISTRY,
)
SOURCES = Gauge("gateway_event_sources", "Event sources by phase.", ["phase"], registry=REGISTRY)
