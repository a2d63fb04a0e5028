"""Why a delivery failed, as types: a retryable fault is retried, a permanent one drops the event.

    DeliveryError                 base; ``subscriber`` is the display name, ``accepted`` the progress
    ├── RetryableDeliveryError    worth retrying (refused, reset, timeout, 408/429/5xx, no stream yet);
    │                             ``retry_after`` is the subscriber's advice in seconds, if it gave any
    └── PermanentDeliveryError    retrying cannot help; ``reason`` is ``rejected`` (a 4xx) or
                                  ``too_large`` (over the broker's max payload)

A transport's ``send(batch, progress)`` calls ``progress(n)`` as the subscriber takes messages (the
first ``n`` of the batch are accepted), and raises these with ``accepted``: how many messages at the
head of the batch the subscriber took before the failure. For a permanent error the message at index
``accepted`` is the one refused; the messages after it were not attempted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from common.errors import GatewayError

PermanentReason = Literal["rejected", "too_large"]
Progress = Callable[[int], None]
"""Told, as a send goes on, how many messages at the head of its batch the subscriber has accepted."""


class DeliveryError(GatewayError):
    """Delivery to ``subscriber`` failed after ``accepted`` messages of the batch had been taken."""

    def __init__(self, subscriber: str, message: str, *, accepted: int = 0) -> None:
        self.subscriber = subscriber
        self.detail = message
        self.accepted = accepted
        super().__init__(f"{subscriber}: {message}")


class RetryableDeliveryError(DeliveryError):
    """A fault worth retrying; ``retry_after`` (seconds) is the subscriber's own advice, if any."""

    def __init__(
        self, subscriber: str, message: str, *, retry_after: float | None = None, accepted: int = 0
    ) -> None:
        super().__init__(subscriber, message, accepted=accepted)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The subscriber will never take the message at index ``accepted``: ``reason`` says why."""

    def __init__(self, subscriber: str, message: str, *, reason: PermanentReason, accepted: int = 0) -> None:
        super().__init__(subscriber, message, accepted=accepted)
        self.reason: PermanentReason = reason
