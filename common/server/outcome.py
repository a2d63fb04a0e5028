"""How a stream ends: the mapping from a source's outcome to a gRPC status, the client contract.

OK                the source completed; the client does not restart it.
INVALID_ARGUMENT  the config is bad; the client does not retry until the config changes.
UNAVAILABLE       a fault worth retrying with backoff (external system down, server stopping).
INTERNAL          an unexpected failure of the source; also worth retrying with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from common.errors import ConfigError, RetriesExhausted, SourceFailed, SourceUnavailable


class ShuttingDown(Exception):
    """The server is stopping; the client should retry once a server is back."""

    def __init__(self) -> None:
        super().__init__("gateway server is shutting down")


@dataclass(frozen=True)
class StreamEnd:
    """The status a stream ends with and the reason carried in its details."""

    code: grpc.StatusCode
    details: str


def stream_end(outcome: BaseException | None) -> StreamEnd:
    """The status for a source that ended with ``outcome`` (None: it completed)."""
    if outcome is None:
        return StreamEnd(grpc.StatusCode.OK, "event source completed")
    if isinstance(outcome, ConfigError | SourceFailed):
        return StreamEnd(grpc.StatusCode.INVALID_ARGUMENT, str(outcome))
    if isinstance(outcome, SourceUnavailable | RetriesExhausted | ShuttingDown):
        return StreamEnd(grpc.StatusCode.UNAVAILABLE, str(outcome))
    return StreamEnd(grpc.StatusCode.INTERNAL, f"event source has failed: {outcome!r}")
