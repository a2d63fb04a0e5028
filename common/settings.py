"""Typed settings, read once at the entrypoint from flags and the environment.

The gateway-controller injects the same seed variables into both containers of a gateway pod
(``GATEWAY_NAME``, ``GATEWAY_NAMESPACE``, ``GATEWAY_EVENT_SOURCE_CONFIG_MAP``,
``GATEWAY_CONTROLLER_INSTANCE_ID``, ``GATEWAY_CONTROLLER_NAME``, ``GATEWAY_SERVER_PORT``);
``PodEnvironment.from_env`` reads them all into one object. None is required: a standalone run
has none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_SERVER_PORT = 9330
"""The gRPC port every v0.11 example uses (``processorPort: "9330"``)."""
DEFAULT_OPS_PORT = 9331
"""The client's operations port (``/healthz``, ``/readyz``, ``/metrics``), next to the gRPC port."""


class SettingsError(ValueError):
    """A setting read from the environment or a flag is unusable; the message names it."""


@dataclass(frozen=True)
class PodEnvironment:
    """The seed variables the v0.11 gateway-controller injects into every gateway container."""

    name: str = ""
    """``GATEWAY_NAME``: the Gateway resource's name; the CloudEvent ``source``."""
    namespace: str = ""
    """``GATEWAY_NAMESPACE``: where the Gateway and, by default, its ConfigMap live."""
    event_source_config_map: str = ""
    """``GATEWAY_EVENT_SOURCE_CONFIG_MAP``: the ConfigMap of event sources (``ns/name`` allowed)."""
    controller_instance_id: str = ""
    """``GATEWAY_CONTROLLER_INSTANCE_ID``: the controller instance that owns this gateway."""
    controller_name: str = ""
    """``GATEWAY_CONTROLLER_NAME``: the controller's name (``gateway-controller``)."""
    server_port: int | None = None
    """``GATEWAY_SERVER_PORT``: the gRPC port (``spec.processorPort``); None when unset."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodEnvironment:
        """Read the seed variables; a malformed ``GATEWAY_SERVER_PORT`` is an error naming it."""
        env = os.environ if env is None else env
        raw_port = env.get("GATEWAY_SERVER_PORT", "").strip()
        return cls(
            name=env.get("GATEWAY_NAME", ""),
            namespace=env.get("GATEWAY_NAMESPACE", ""),
            event_source_config_map=env.get("GATEWAY_EVENT_SOURCE_CONFIG_MAP", ""),
            controller_instance_id=env.get("GATEWAY_CONTROLLER_INSTANCE_ID", ""),
            controller_name=env.get("GATEWAY_CONTROLLER_NAME", ""),
            server_port=parse_port(raw_port, "GATEWAY_SERVER_PORT") if raw_port else None,
        )


def parse_port(text: str, name: str) -> int:
    """A TCP port from text, or ``SettingsError`` naming ``name``."""
    try:
        port = int(text)
    except ValueError:
        raise SettingsError(f"{name}: {text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}: {port} is outside 0-65535")
    return port


@dataclass(frozen=True)
class LogSettings:
    """How the process logs."""

    format: str = "text"
    """``text`` for people, ``json`` for log pipelines (one object per line)."""
    level: str = "INFO"
    """The root level; ``DEBUG_LOG=true`` (the v0.11 switch) lowers it to DEBUG."""


GC_POLICIES = ("paced", "python")


@dataclass(frozen=True)
class CollectorSettings:
    """How the server paces CPython's garbage collector."""

    policy: str = "paced"
    """``paced`` (see ``common.collector``) or ``python`` (CPython's own allocation-count triggers)."""
    young_interval: float = 0.1
    """Seconds between young passes."""
    full_interval: float = 60.0
    """Seconds between full passes over the unfrozen heap."""
    settle: float = 1.0
    """Seconds without a source starting before what is alive is frozen."""
    deep_interval: float = 600.0
    """Seconds between deep passes (everything, frozen included) while anything is frozen."""

    def __post_init__(self) -> None:
        if self.policy not in GC_POLICIES:
            raise SettingsError(f"gc policy {self.policy!r}: expected one of {', '.join(GC_POLICIES)}")


@dataclass(frozen=True)
class ServerSettings:
    """The gRPC gateway server."""

    host: str = "127.0.0.1"
    """Interface to listen on. Loopback: the client runs in the same pod, and the Eventing service has
    no authentication (v0.11 listened on every interface)."""
    port: int = DEFAULT_SERVER_PORT
    """gRPC port; ``--port`` overrides ``GATEWAY_SERVER_PORT``, which overrides 9330. 0 picks a free one."""
    grace_period: float = 10.0
    """Seconds a shutdown gives sources to finish and their streams to be read by the client (stage
    1 of a pod stop); then what is still unwritten is refused (a webhook caller gets 503). Within
    Kubernetes' default 30 s termination grace, with room for the client's delivery stage after it."""
    end_timeout: float = 5.0
    """Seconds a control-channel stream waits, after its last message, for the client to confirm it
    has read everything (its half-close). Our client confirms at once; this bounds a client that
    never does."""
    stream_buffer: int = 64
    """Events a source may run ahead of its gRPC stream before it is paused (back-pressure)."""
    stop_timeout: float = 5.0
    """Seconds a cancelled source gets to clean up before it is abandoned with an error log."""
    ops_port: int = DEFAULT_OPS_PORT
    """The client's ops port in the same pod: kept free, so no source may listen on it."""
    metrics_port: int = -1
    """Where ``gateway serve`` exposes the server's and the kind's metrics; -1 is off. Reserved like the
    ops port."""
    listen_host: str | None = None
    """The interface the kind's own listeners bind (the webhook's ports); None: every interface. A server
    flag, not a config field: one port is shared by the sources on it."""
    max_pending_rpcs: int = 50_000
    """Calls gRPC may hold before the server accepts them. gRPC's own limits (1,000, hard 3,000)
    cancel calls when a client starts thousands of sources at once; this covers 10,000 and more."""
    gc: CollectorSettings = field(default_factory=CollectorSettings)
    """How garbage collection is paced (``--gc``, ``GATEWAY_GC``): see ``common.collector``."""
    pod: PodEnvironment = field(default_factory=PodEnvironment)
    """The seed environment of the pod, for logs and status."""
