"""Generated protobuf and gRPC stubs for ``proto/eventing.proto`` (``make proto`` regenerates them).

``eventing_stub`` gives the asyncio stub its precise type: the generated ``EventingStub`` overload
selects the async variant only when the channel is typed as ``grpc.aio.Channel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from common.rpc import eventing_pb2_grpc

if TYPE_CHECKING:
    from common.rpc.eventing_pb2_grpc import EventingAsyncStub


def eventing_stub(channel: grpc.aio.Channel) -> EventingAsyncStub:
    """The Eventing stub for an asyncio channel."""
    return eventing_pb2_grpc.EventingStub(channel)
