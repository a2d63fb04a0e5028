"""Calendar slot -> event: the v0.11 payload plus a slot-derived id. Pure, no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from common.events import SourceEvent, rfc3339


def payload(slot: datetime, user_payload: Any) -> bytes:
    """``{"eventTime": <slot, RFC 3339 with offset>, "userPayload": ...}``, compact as Go writes it."""
    body = {"eventTime": rfc3339(slot), "userPayload": user_payload}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode()


def event_id(source: str, slot: datetime) -> str:
    """``<source>:<slot instant in UTC>``: one id per slot, whatever restarts or replicas do."""
    return f"{source}:{rfc3339(slot.astimezone(UTC))}"


def to_event(source: str, slot: datetime, user_payload: Any) -> SourceEvent:
    """The event for ``slot`` of ``source``."""
    return SourceEvent(
        payload=payload(slot, user_payload),
        id=event_id(source, slot),
        time=slot,
        content_type="application/json",
    )
