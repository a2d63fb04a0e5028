"""The gateway server's own Prometheus metrics, the same for every kind (a kind adds its own registry).

Served on ``gateway serve --metrics-port`` beside the kind's, and on the ops port of ``gateway run``.
Labels: ``source`` is the event-source name; ``code`` a gRPC status code name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

SOURCES_RUNNING = Gauge(
    "gateway_server_sources_running", "Event sources with an open stream.", registry=REGISTRY
)
EVENTS_SENT = Counter(
    "gateway_server_events_sent", "Events written to a source's stream.", ["source"], registry=REGISTRY
)
BUFFERED = Gauge(
    "gateway_server_buffered_events",
    "Events a source has produced that are not written to its stream yet.",
    ["source"],
    registry=REGISTRY,
)
UNACKNOWLEDGED = Gauge(
    "gateway_server_unacknowledged_events",
    "Events written to a control-channel stream that the client has not acknowledged yet.",
    ["source"],
    registry=REGISTRY,
)
STREAM_ENDS = Counter(
    "gateway_server_stream_ends",
    "Streams ended, by the gRPC status they ended with.",
    ["code"],
    registry=REGISTRY,
)
