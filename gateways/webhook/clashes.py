"""Which webhook sources cannot run side by side: the same route, a reserved port, or mixed TLS on a port.

One pass over the other sources keeps only those on the same port; the route and TLS checks then look
at that port's sources alone, indexed by (endpoint, method). A check is O(number of sources), and
the pairwise work is limited to the sources that share a port.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateways.webhook.config import TlsFiles, WebhookConfig


def clashes(
    name: str, config: WebhookConfig, others: Mapping[str, WebhookConfig], reserved: frozenset[int]
) -> dict[str, str]:
    """``{field: problem}`` for each way ``name`` clashes; every message names the other source."""
    problems: dict[str, str] = {}
    if config.port in reserved:
        problems["port"] = (
            f"{config.port} is reserved for the gateway itself (its gRPC port or the client's ops "
            f"port): event source {name!r} must use another"
        )
        return problems
    same_port = {other: cfg for other, cfg in others.items() if cfg.port == config.port}
    if not same_port:
        return problems
    by_route: dict[tuple[str, str], list[str]] = {}
    other_tls: dict[TlsFiles | None, list[str]] = {}
    for other, cfg in sorted(same_port.items()):
        by_route.setdefault((cfg.endpoint, cfg.method), []).append(other)
        other_tls.setdefault(cfg.tls, []).append(other)
    taken = by_route.get((config.endpoint, config.method))
    if taken:
        problems["endpoint"] = f"event source {name!r} and {_sources(taken)} both serve {config.route}"
    mismatched = sorted(other for tls, names in other_tls.items() if tls != config.tls for other in names)
    if mismatched:
        field = "serverCertPath" if config.tls is not None else "port"
        verb = "serves" if len(mismatched) == 1 else "serve"
        theirs = _describe(same_port[mismatched[0]].tls)
        problems[field] = (
            f"event source {name!r} serves port {config.port} {_describe(config.tls)}, but "
            f"{_sources(mismatched)} {verb} it {theirs}; "
            "every source on one port must use the same TLS settings"
        )
    return problems


def _sources(names: list[str]) -> str:
    if len(names) == 1:
        return f"event source {names[0]!r}"
    return "event sources " + ", ".join(repr(n) for n in names)


def _describe(tls: TlsFiles | None) -> str:
    return f"with TLS ({tls.cert}, {tls.key})" if tls is not None else "without TLS"
