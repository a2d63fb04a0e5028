"""Generated protobuf and gRPC stubs for ``proto/eventing.proto`` (``make proto`` regenerates them).

``eventing_stub`` gives the asyncio stub its precise type: the generated ``EventingStub`` overload
selects the async variant only when the channel is typed as ``grpc.aio.Channel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from common.rpc import eventing_pb2_grpc

WINDOW_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 256 * 1024),
)
"""HTTP/2 flow control as both sides set it: a fixed stream window instead of one that bandwidth-delay
probing grows to several MiB. Over the control channel the unacknowledged window bounds what is in
flight anyway; over the v0.11 RPC, which has none, this window is the bound."""

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def eventing_stub(channel: grpc.aio.Channel) -> EventingAsyncStub:
    """The Eventing stub for an asyncio channel."""
    return eventing_pb2_grpc.EventingStub(channel)
