"""The real gateway server without the control channel, as a v0.11 server is:
``python -m bench.v011_server serve KIND ...`` (the arguments of ``gateway serve``).

``StreamEventSource`` answers UNIMPLEMENTED, so the real ``gateway client`` falls back to
``StartEventSource`` (it logs "using StartEventSource"): no acknowledgements, and a source's event
counts as delivered once it is written to the stream (a NATS JetStream message is acked then).
Everything else is ``gateway serve`` itself, the same command line, settings and code: only the
servicer class that ``GatewayServer`` builds is swapped for one that refuses the method.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import grpc

from common import cli
from common.rpc import eventing_pb2
from common.server import app
from common.server.servicer import EventingServicer

_log = logging.getLogger(__name__)


class V011Servicer(EventingServicer):
    """The product servicer with ``StreamEventSource`` refused: only ``StartEventSource`` is served."""

    async def StreamEventSource(
        self,
        requests: AsyncIterator[eventing_pb2.StreamControl],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[eventing_pb2.StreamMessage]:
        _log.info("StreamEventSource refused (UNIMPLEMENTED), as by a v0.11 server.")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "StreamEventSource is not offered")
        yield eventing_pb2.StreamMessage()  # unreachable: makes this an async generator


def main(argv: list[str]) -> int:
    with mock.patch.object(app, "EventingServicer", V011Servicer):
        return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
