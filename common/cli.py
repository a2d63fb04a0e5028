"""The ``gateway`` command: serve a kind, validate a ConfigMap offline, or run standalone.

    gateway serve KIND [--host H] [--port N]      the gateway server (a container's entrypoint)
    gateway validate KIND FILE                    check a ConfigMap YAML: OK or the reasons, per key
    gateway run KIND [--event-sources FILE]       server and client in one process (standalone)
    gateway client --event-sources FILE           the client alone, against a running server
    (run and client: --subscriber URL ..., --format, --name, --ops-port, --when-full, --retry-cap, --grace)
    (serve, run and client: --gc paced|python, garbage collection; $GATEWAY_GC)
    (serve, run and client: --loop auto|asyncio|uvloop, the event loop; $GATEWAY_LOOP)

Exit codes: 0 success (validate: all valid), 1 failure (validate: any invalid), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import logs, loops
from common.client.app import ClientSettings
from common.client.config_source import ConfigSource, FileConfigSource, StaticConfigSource
from common.client.delivery.settings import DeliverySettings
from common.client.model import Format
from common.client.ops import DEFAULT_OPS_PORT
from common.client.runner import DeliveryOptions, build_delivery, gateway_identity, run_client, run_standalone
from common.client.stream import UnackedBound
from common.client.subscribers import SubscriberError
from common.configmap import EventSourceFileError, read_event_sources
from common.kinds import GatewayKind, UnknownKindError, available_kinds, load_kind
from common.metrics_http import MetricsServer
from common.server.app import serve
from common.server.metrics import REGISTRY as SERVER_REGISTRY
from common.settings import (
    DEFAULT_SERVER_PORT,
    GC_POLICIES,
    CollectorSettings,
    LogSettings,
    PodEnvironment,
    ServerSettings,
    SettingsError,
    parse_port,
)
from common.signals import install_signal_handlers
from common.validate import validate_all

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
MAX_SECONDS = 3600.0
MIN_RETRY_CAP = 0.1
"""The shortest ``--retry-cap``: the first delay between delivery attempts is 0.1 s already."""


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
    return text


def _seconds(text: str) -> float:
    """A number of seconds from 0 to an hour (``nan``, ``inf`` and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0 to {MAX_SECONDS:g}")
    return value


def _retry_cap(text: str) -> float:
    """Seconds, more than 0 (a cap of 0 would retry a down subscriber in a busy loop)."""
    value = _seconds(text)
    if value < MIN_RETRY_CAP:
        raise argparse.ArgumentTypeError(f"{text} is less than {MIN_RETRY_CAP:g} seconds")
    return value


def _whole(text: str, what: str) -> int:
    """``text`` as a whole number written in ASCII digits (``int`` would also take ``' 80'`` and
    other scripts' digits)."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return int(text)


def _port_or_off(text: str) -> int:
    """A TCP port, 0 for any free one, or -1 for off."""
    value = _whole(text, "a port number")
    if not -1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0-65535 (or -1: off)")
    return value


def _count(text: str) -> int:
    value = _whole(text, "a whole number")
    if not 1 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{value} must be from 1 to {2**32 - 1}")
    return value


_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _host(text: str) -> str:
    """An IP address, or a host name by RFC 1123 (an all-numeric dotted name must be an IPv4 address)."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    with contextlib.suppress(ValueError):  # not an IP address: then it must be a host name
        ipaddress.ip_address(bare)
        return text
    labels = text.split(".")
    numeric = all(label.isdigit() for label in labels)
    if numeric or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or IP address")
    return text


def _server_address(text: str) -> str:
    """``host:port`` (``[v6]:port`` for IPv6): the port is required, gRPC would otherwise dial 443."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise argparse.ArgumentTypeError(f"{text!r}: expected host:port, e.g. localhost:9330")
    _host(host)
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 1 to 65535")
    return text


def _gc_policy(text: str) -> str:
    if text not in GC_POLICIES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(GC_POLICIES)} (also $GATEWAY_GC)"
        )
    return text


def _version() -> str:
    try:
        return importlib.metadata.version("gateways")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _global_args(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Flags every command takes, before or after the command (the later one wins): the top-level
    parser gives the defaults, a command's copy leaves the value alone unless the flag is given."""
    parser.add_argument(
        "--log-format",
        type=_log_format,
        metavar="FORMAT",
        default="text" if defaults else argparse.SUPPRESS,
        help="log lines: text (default) or json",
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="LEVEL",
        default=None if defaults else argparse.SUPPRESS,
        help="DEBUG, INFO (default), WARNING or ERROR",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Event gateways, Argo Events v0.11 compatible."
    )
    parser.add_argument("--version", action="version", version=f"gateway {_version()}")
    _global_args(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    _global_args(shared, defaults=False)

    serve_cmd = commands.add_parser(
        "serve", parents=[shared], help="run a gateway server (the gRPC Eventing service)"
    )
    serve_cmd.add_argument("kind", help=f"gateway kind: {', '.join(available_kinds())}")
    serve_cmd.add_argument(
        "--host", type=_host, default="127.0.0.1", help="interface of the gRPC port (default 127.0.0.1)"
    )
    serve_cmd.add_argument("--port", default=None, help="gRPC port (default $GATEWAY_SERVER_PORT, else 9330)")
    serve_cmd.add_argument(
        "--grace", type=_seconds, default=10.0, metavar="SECONDS", help="shutdown grace period (default 10)"
    )
    serve_cmd.add_argument(
        "--metrics-port",
        type=_port_or_off,
        default=-1,
        metavar="PORT",
        help="serve the server's and the kind's Prometheus /metrics here (-1: off)",
    )
    serve_cmd.add_argument(
        "--metrics-host", type=_host, default="0.0.0.0", help="interface of the metrics port (default all)"
    )
    _listen_arg(serve_cmd)
    _runtime_args(serve_cmd)

    validate_cmd = commands.add_parser(
        "validate", parents=[shared], help="validate a ConfigMap YAML of event sources"
    )
    validate_cmd.add_argument("kind")
    validate_cmd.add_argument("file", type=Path)

    run_cmd = commands.add_parser(
        "run", parents=[shared], help="run a gateway standalone: server and client in one process"
    )
    run_cmd.add_argument("kind")
    run_cmd.add_argument("--event-sources", type=Path, default=None, help="ConfigMap YAML (default: a demo)")
    _listen_arg(run_cmd)
    _runtime_args(run_cmd)
    _delivery_args(run_cmd, ops_default=-1, ops_host="127.0.0.1")

    client_cmd = commands.add_parser(
        "client", parents=[shared], help="run the gateway client against a running server"
    )
    client_cmd.add_argument(
        "--server",
        type=_server_address,
        default=None,
        metavar="HOST:PORT",
        help="the gateway server (default localhost:$GATEWAY_SERVER_PORT, else localhost:9330)",
    )
    client_cmd.add_argument(
        "--event-sources", type=Path, required=True, help="ConfigMap YAML of event sources"
    )
    client_cmd.add_argument(
        "--kind", default="", help="the gateway kind, the CloudEvent type (default: from --name)"
    )
    _delivery_args(client_cmd, ops_default=DEFAULT_OPS_PORT, ops_host="0.0.0.0")
    _runtime_args(client_cmd)
    return parser


def _listen_arg(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--listen-host",
        type=_host,
        default=None,
        metavar="HOST",
        help="interface the kind's own listeners bind, e.g. webhook ports (default: all)",
    )


def _loop_choice(text: str) -> str:
    try:
        loops.resolve(text)
    except loops.LoopUnavailable as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _runtime_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--gc",
        type=_gc_policy,
        default=os.environ.get("GATEWAY_GC", "paced"),
        metavar="POLICY",
        help="garbage collection: paced (default; $GATEWAY_GC) or python",
    )
    cmd.add_argument(
        "--loop",
        type=_loop_choice,
        default=os.environ.get(loops.ENV, "auto"),
        metavar="LOOP",
        help="event loop: auto (default: uvloop if installed; $GATEWAY_LOOP), asyncio or uvloop",
    )


def _delivery_args(cmd: argparse.ArgumentParser, *, ops_default: int, ops_host: str) -> None:
    cmd.add_argument(
        "--subscriber",
        action="append",
        default=[],
        metavar="URL",
        help="http(s)://..., nats://host:port[/subject], jetstream://host:port[/subject]; ?format= per URL",
    )
    cmd.add_argument(
        "--format", choices=[f.value for f in Format], default="binary", help="default event format"
    )
    cmd.add_argument(
        "--name", default=os.environ.get("GATEWAY_NAME", ""), help="gateway name (CloudEvent source)"
    )
    cmd.add_argument(
        "--when-full", choices=("block", "drop"), default="block", help="a full subscriber queue"
    )
    cmd.add_argument(
        "--retry-cap",
        type=_retry_cap,
        metavar="SECONDS",
        default=DeliverySettings().retry.cap,
        help="longest wait between delivery attempts: how soon a subscriber's return is noticed (default 10)",
    )
    cmd.add_argument(
        "--drain-grace",
        type=_seconds,
        metavar="SECONDS",
        default=10.0,
        help="seconds a stop waits for sources to drain (the server writes what they hold)",
    )
    cmd.add_argument(
        "--grace",
        type=_seconds,
        metavar="SECONDS",
        default=10.0,
        help="seconds a stop then waits for queued events to be delivered",
    )
    cmd.add_argument(
        "--max-unacked-events",
        type=_count,
        default=UnackedBound.events,
        metavar="N",
        help="events of one source held between answered and delivered (default 1000)",
    )
    cmd.add_argument(
        "--max-unacked-bytes",
        type=_count,
        default=UnackedBound.bytes,
        metavar="BYTES",
        help="the same bound in bytes (default 4194304)",
    )
    cmd.add_argument(
        "--ops-port",
        type=_port_or_off,
        default=ops_default,
        metavar="PORT",
        help=f"/healthz /readyz /metrics port (-1: off; default {ops_default})",
    )
    cmd.add_argument(
        "--ops-host",
        type=_host,
        default=ops_host,
        metavar="HOST",
        help=f"interface of the ops port (default {ops_host})",
    )


def _delivery(args: argparse.Namespace) -> DeliveryOptions:
    settings = DeliverySettings(when_full=args.when_full)
    settings = dataclasses.replace(settings, retry=dataclasses.replace(settings.retry, cap=args.retry_cap))
    return DeliveryOptions(tuple(args.subscriber), Format(args.format), settings)


def _stopping(args: argparse.Namespace) -> dict[str, Any]:
    """The client's stop settings from the flags (each checked by its argparse type)."""
    return {
        "drain_grace": args.drain_grace,
        "grace_period": args.grace,
        "bound": UnackedBound(events=args.max_unacked_events, bytes=args.max_unacked_bytes),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gateway`` console script."""
    args = _parser().parse_args(argv)
    level = args.log_level or ("DEBUG" if os.environ.get("DEBUG_LOG") == "true" else "INFO")
    logs.configure(LogSettings(format=args.log_format, level=level))
    try:
        if args.command == "client":
            return _client(args)
        kind = load_kind(args.kind)
        if args.command == "serve":
            return _serve(kind, args)
        if args.command == "validate":
            return _validate(kind, args.file)
        return _run(kind, args)
    except (UnknownKindError, SettingsError, EventSourceFileError, SubscriberError, OSError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _serve(kind: GatewayKind[Any], args: argparse.Namespace) -> int:
    pod = PodEnvironment.from_env()
    port = parse_port(args.port, "--port") if args.port is not None else pod.server_port
    settings = ServerSettings(
        host=args.host,
        port=DEFAULT_SERVER_PORT if port is None else port,
        grace_period=args.grace,
        metrics_port=args.metrics_port,
        listen_host=args.listen_host,
        gc=CollectorSettings(policy=args.gc),
        pod=pod,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        metrics = None
        if args.metrics_port >= 0:
            registries = (SERVER_REGISTRY, *((kind.metrics,) if kind.metrics is not None else ()))
            metrics = MetricsServer(registries, args.metrics_host, settings.metrics_port)
            await metrics.start()
        try:
            await serve(kind, settings, stop)
        finally:
            if metrics is not None:
                await metrics.stop()

    loops.run(main(), args.loop)
    return EXIT_OK


def _validate(kind: GatewayKind[Any], path: Path) -> int:
    try:
        specs = read_event_sources(path)
    except EventSourceFileError as exc:
        print(f"INVALID {path}: {exc}")
        return EXIT_FAILED
    pod = PodEnvironment.from_env()
    reserved = frozenset({pod.server_port or DEFAULT_SERVER_PORT, DEFAULT_OPS_PORT})
    verdicts = validate_all(kind, specs, reserved)
    for verdict in verdicts:
        reason = verdict.error.reason if verdict.error is not None else ""
        print(f"OK      {verdict.name}" if verdict.ok else f"INVALID {verdict.name}: {reason}")
    if not verdicts:
        print(f"(no event sources in {path})")
    return EXIT_OK if all(v.ok for v in verdicts) else EXIT_FAILED


def _run(kind: GatewayKind[Any], args: argparse.Namespace) -> int:
    path: Path | None = args.event_sources
    config: ConfigSource
    if path is None:
        config = StaticConfigSource(kind.demo, f"the {kind.name} demo")
    else:
        config = FileConfigSource(path)
    gateway = gateway_identity(kind.name, args.name)
    delivery = build_delivery(_delivery(args), gateway, sys.stdout)
    gc = CollectorSettings(policy=args.gc)
    settings = ClientSettings(ops_host=args.ops_host, ops_port=args.ops_port, gc=gc, **_stopping(args))

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_standalone(kind, config, delivery, stop, settings=settings, listen_host=args.listen_host)

    loops.run(main(), args.loop)
    return EXIT_OK


def _client(args: argparse.Namespace) -> int:
    pod = PodEnvironment.from_env()
    target = args.server or f"localhost:{pod.server_port or DEFAULT_SERVER_PORT}"
    name = args.name or pod.name
    kind_name = args.kind or (name.removesuffix("-gateway") if name.endswith("-gateway") else "gateway")
    gateway = gateway_identity(kind_name, name)
    delivery = build_delivery(_delivery(args), gateway, sys.stdout)
    gc = CollectorSettings(policy=args.gc)
    settings = ClientSettings(
        server=target, ops_host=args.ops_host, ops_port=args.ops_port, gc=gc, **_stopping(args)
    )
    config = FileConfigSource(args.event_sources)
    kind = load_kind(kind_name) if kind_name in available_kinds() else None
    server_port = int(target.rsplit(":", 1)[1]) if target.rsplit(":", 1)[-1].isdigit() else 0

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_client(settings, config, delivery, stop, kind=kind, server_port=server_port)

    loops.run(main(), args.loop)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
