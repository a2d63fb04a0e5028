"""A message whose properties Python cannot decode still arrives: its body, without them.

pamqp decodes a message's content header (its properties) as the frame comes in. Some values a
publisher may send cannot be: a timestamp in nanoseconds (a year past 9999), a headers table nested
deeper than Python's recursion limit, a table key that is not UTF-8. pamqp then raises, aiormq's
reader dies with the connection, and the broker delivers the same message to the next connection:
the queue is stuck behind it for good, and what was delivered before it but not yet acked comes again
each time. Here such a header is read for what the protocol needs (the body's size) and its
properties are replaced by one header, ``PROPERTIES_ERROR``, saying why; the message becomes an
event like any other (``binding`` names the problem in an extension), is delivered and acked.
"""

from __future__ import annotations

import struct

import pamqp.frame
from pamqp import commands, exceptions, header

PROPERTIES_ERROR = "x-gateway-properties-error"
"""The one header of a message whose properties could not be decoded: why, in Python's words."""

_strict = pamqp.frame._unmarshal_header_frame


def _lenient(frame_data: bytes) -> header.ContentHeader:
    try:
        return _strict(frame_data)
    except (
        ValueError,
        RecursionError,
        OverflowError,
        OSError,
        exceptions.UnmarshalingException,
    ) as exc:
        cause = exc.__cause__ or exc
        weight, body_size = struct.unpack(">xxHQ", frame_data[:12])
        properties = commands.Basic.Properties(
            headers={PROPERTIES_ERROR: f"{type(cause).__name__}: {cause}"[:200]}
        )
        return header.ContentHeader(weight, body_size, properties)


def install() -> None:
    """Make pamqp read content headers leniently (once; idempotent)."""
    pamqp.frame._unmarshal_header_frame = _lenient
