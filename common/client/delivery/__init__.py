"""Delivery to subscribers: per subscriber a transport, per source an ordered lane with retries.

``Fanout`` feeds every ``Subscriber``; a subscriber owns one ``Transport`` (``http``, ``nats``) and a
lane per event source. Errors are in ``errors``, the tunables in ``settings``.
"""

from common.client.delivery.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from common.client.delivery.fanout import Encoder, Fanout
from common.client.delivery.settings import DeliverySettings
from common.client.delivery.subscriber import Subscriber, SubscriberStatus, Transport, transport_for

__all__ = [
    "DeliveryError",
    "DeliverySettings",
    "Encoder",
    "Fanout",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
    "Subscriber",
    "SubscriberStatus",
    "Transport",
    "transport_for",
]
