"""The ``gateway`` command: serve a kind, validate a ConfigMap offline, or run standalone.

    gateway serve KIND [--host H] [--port N]      the gateway server (a container's entrypoint)
    gateway validate KIND FILE                    check a ConfigMap YAML: OK or the reasons, per key
    gateway run KIND [--event-sources FILE]       server and client in one process (standalone)
    gateway client --event-sources FILE           the client alone, against a running server
    (run and client: --subscriber URL ..., --format, --name, --ops-port, --when-full, --grace)
    (serve, run and client: --gc paced|python, how garbage collection is paced; $GATEWAY_GC)

Exit codes: 0 success (validate: all valid), 1 failure (validate: any invalid), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import logs
from common.client.app import ClientSettings
from common.client.config_source import ConfigSource, FileConfigSource, StaticConfigSource
from common.client.delivery.settings import DeliverySettings
from common.client.model import Format
from common.client.ops import DEFAULT_OPS_PORT
from common.client.runner import DeliveryOptions, build_delivery, gateway_identity, run_client, run_standalone
from common.client.stream import UnackedBound
from common.client.subscribers import SubscriberError
from common.configmap import EventSourceFileError, parse_event_sources
from common.kinds import GatewayKind, UnknownKindError, available_kinds, load_kind
from common.metrics_http import MetricsServer
from common.server.app import serve
from common.settings import (
    DEFAULT_SERVER_PORT,
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Event gateways, Argo Events v0.11 compatible."
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format")
    parser.add_argument("--log-level", default="", help="DEBUG, INFO (default), WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run a gateway server (the gRPC Eventing service)")
    serve_cmd.add_argument("kind", help=f"gateway kind: {', '.join(available_kinds())}")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve_cmd.add_argument("--port", default=None, help="gRPC port (default $GATEWAY_SERVER_PORT, else 9330)")
    serve_cmd.add_argument("--grace", type=float, default=10.0, help="shutdown grace period in seconds")
    serve_cmd.add_argument(
        "--metrics-port", type=int, default=-1, help="serve the kind's Prometheus /metrics here (-1: off)"
    )
    serve_cmd.add_argument("--metrics-host", default="0.0.0.0", help="interface of the metrics port")
    _gc_arg(serve_cmd)

    validate_cmd = commands.add_parser("validate", help="validate a ConfigMap YAML of event sources")
    validate_cmd.add_argument("kind")
    validate_cmd.add_argument("file", type=Path)

    run_cmd = commands.add_parser("run", help="run a gateway standalone: server and client in one process")
    run_cmd.add_argument("kind")
    run_cmd.add_argument("--event-sources", type=Path, default=None, help="ConfigMap YAML (default: a demo)")
    _gc_arg(run_cmd)
    _delivery_args(run_cmd, ops_default=-1)

    client_cmd = commands.add_parser("client", help="run the gateway client against a running server")
    client_cmd.add_argument(
        "--server", default=None, help="host:port (default localhost:$GATEWAY_SERVER_PORT)"
    )
    client_cmd.add_argument(
        "--event-sources", type=Path, required=True, help="ConfigMap YAML of event sources"
    )
    client_cmd.add_argument(
        "--kind", default="", help="the gateway kind, the CloudEvent type (default: from --name)"
    )
    _delivery_args(client_cmd, ops_default=DEFAULT_OPS_PORT)
    _gc_arg(client_cmd)
    return parser


def _gc_arg(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--gc",
        default=os.environ.get("GATEWAY_GC", "paced"),
        metavar="POLICY",
        help="garbage collection: paced (default; $GATEWAY_GC) or python",
    )


def _delivery_args(cmd: argparse.ArgumentParser, *, ops_default: int) -> None:
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
        "--drain-grace",
        type=float,
        default=10.0,
        help="seconds a stop waits for sources to drain (the server writes what they hold)",
    )
    cmd.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds a stop then waits for queued events to be delivered",
    )
    cmd.add_argument(
        "--max-unacked-events",
        type=int,
        default=UnackedBound.events,
        metavar="N",
        help="events of one source held between answered and delivered (default 1000)",
    )
    cmd.add_argument(
        "--max-unacked-bytes",
        type=int,
        default=UnackedBound.bytes,
        metavar="BYTES",
        help="the same bound in bytes (default 4194304)",
    )
    cmd.add_argument(
        "--ops-port",
        type=int,
        default=ops_default,
        help=f"/healthz /readyz /metrics port (-1: off; {ops_default})",
    )


def _delivery(args: argparse.Namespace) -> DeliveryOptions:
    settings = DeliverySettings(when_full=args.when_full)
    return DeliveryOptions(tuple(args.subscriber), Format(args.format), settings)


def _stopping(args: argparse.Namespace) -> dict[str, Any]:
    """The client's stop settings from the flags; ``SettingsError`` naming a flag that cannot work."""
    for flag, value in (("--drain-grace", args.drain_grace), ("--grace", args.grace)):
        if not 0 <= value <= 3600:  # also refuses nan
            raise SettingsError(f"{flag}: {value} is not a number of seconds from 0 to 3600")
    for flag, value in (
        ("--max-unacked-events", args.max_unacked_events),
        ("--max-unacked-bytes", args.max_unacked_bytes),
    ):
        if not 1 <= value <= 2**32 - 1:
            raise SettingsError(f"{flag}: {value} must be from 1 to {2**32 - 1}")
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
        gc=CollectorSettings(policy=args.gc),
        pod=pod,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        metrics = None
        if args.metrics_port >= 0 and kind.metrics is not None:
            metrics = MetricsServer((kind.metrics,), args.metrics_host, settings.metrics_port)
            await metrics.start()
        try:
            await serve(kind, settings, stop)
        finally:
            if metrics is not None:
                await metrics.stop()

    asyncio.run(main())
    return EXIT_OK


def _validate(kind: GatewayKind[Any], path: Path) -> int:
    try:
        specs = parse_event_sources(path.read_text(), origin=str(path))
    except EventSourceFileError as exc:
        print(f"INVALID {path}: {exc}")
        return EXIT_FAILED
    pod = PodEnvironment.from_env()
    reserved = frozenset({pod.server_port or DEFAULT_SERVER_PORT, DEFAULT_OPS_PORT})
    verdicts = validate_all(kind, specs, reserved)
    for verdict in verdicts:
        print(f"OK      {verdict.name}" if verdict.ok else f"INVALID {verdict.name}: {verdict.error}")
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
    settings = ClientSettings(ops_host="127.0.0.1", ops_port=args.ops_port, gc=gc, **_stopping(args))

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_standalone(kind, config, delivery, stop, settings=settings)

    asyncio.run(main())
    return EXIT_OK


def _client(args: argparse.Namespace) -> int:
    pod = PodEnvironment.from_env()
    target = args.server or f"localhost:{pod.server_port or DEFAULT_SERVER_PORT}"
    name = args.name or pod.name
    kind_name = args.kind or (name.removesuffix("-gateway") if name.endswith("-gateway") else "gateway")
    gateway = gateway_identity(kind_name, name)
    delivery = build_delivery(_delivery(args), gateway, sys.stdout)
    gc = CollectorSettings(policy=args.gc)
    settings = ClientSettings(server=target, ops_port=args.ops_port, gc=gc, **_stopping(args))
    config = FileConfigSource(args.event_sources)
    kind = load_kind(kind_name) if kind_name in available_kinds() else None
    server_port = int(target.rsplit(":", 1)[1]) if target.rsplit(":", 1)[-1].isdigit() else 0

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        await run_client(settings, config, delivery, stop, kind=kind, server_port=server_port)

    asyncio.run(main())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
