"""The webhook server's Prometheus metrics, in a registry of their own.

The client's ``/metrics`` serves the client's registry, not this one, and the gateway server has no
HTTP port of its own yet: these counters are kept for tests and for a future ``/metrics`` on the
server (see the README). Labels: ``port`` the webhook port, ``code`` the HTTP status, ``source`` the
event-source name (the ConfigMap key), ``reason`` ``missing`` or ``wrong`` and ``credential``
``bearer`` or ``signature``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

RESPONSES = Counter(
    "webhook_responses", "HTTP responses, by port and status code.", ["port", "code"], registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "webhook_auth_failures",
    "Requests refused for missing (401) or wrong (403) credentials.",
    ["source", "credential", "reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "webhook_rate_limited",
    "Requests refused with 429 over an endpoint's rate limit.",
    ["source"],
    registry=REGISTRY,
)
UNDELIVERED = Counter(
    "webhook_undelivered",
    "answer: delivered requests answered 503 because not every subscriber accepted the event in time "
    "(timeout) or the stream ended first (stream_ended).",
    ["source", "why"],
    registry=REGISTRY,
)
BODY_BYTES = Counter(
    "webhook_body_bytes", "Bytes of request bodies handed to the event stream.", ["source"], registry=REGISTRY
)


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been counted yet): for tests and probes."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value
