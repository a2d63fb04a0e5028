"""paho's client with QoS 2's PUBREC held as well, until the event is delivered.

paho (``manual_ack``) holds a QoS 1 message's PUBACK until ``ack``, but for QoS 2 it sends the PUBREC
on arrival and hands the message on only at the broker's PUBREL, holding just the PUBCOMP. After a
PUBREC the broker has let the message go: a gateway crash before delivery would lose it. Here a QoS
2 message is handed on as it arrives, like a QoS 1 one; ``ack`` sends its PUBREC; the broker's PUBREL
is then answered with the PUBCOMP. Until the PUBREC, a broker keeping the session sends the message
again on the next connection.

This leans on paho's packet handlers (``_handle_publish``, ``_send_pubrec``, ``_handle_pubrel``),
stable across paho 1.x and 2.x; ``tests/mqtt`` checks the whole exchange against a real broker, so an
upgrade that changes them fails there first.
"""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode


class HoldingClient(mqtt.Client):
    """A paho client (``manual_ack``) whose QoS 2 PUBRECs wait for ``ack`` too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived: int | None = None
        """The packet id of a QoS 2 PUBLISH being handled, whose PUBREC was held."""
        self._received: set[int] = set()
        """QoS 2 packet ids whose PUBREC has been sent: their PUBREL gets a PUBCOMP."""

    def _send_pubrec(self, mid: int) -> MQTTErrorCode:
        self._arrived = mid  # called by _handle_publish on a QoS 2 PUBLISH: hold it
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        self._arrived = None
        rc = super()._handle_publish()
        mid, self._arrived = self._arrived, None
        if mid is not None:
            with self._in_message_mutex:
                message = self._in_messages.pop(mid, None)
            if message is not None:
                self._handle_on_message(message)
        return rc

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        if qos == 2:
            self._received.add(mid)
            return mqtt.Client._send_pubrec(self, mid)
        return super().ack(mid, qos)

    def _handle_pubrel(self) -> MQTTErrorCode:
        rc = super()._handle_pubrel()  # the message is not stored: paho neither hands it on nor answers
        packet = self._in_packet["packet"]
        mid = struct.unpack("!H", bytes(packet[:2]))[0] if len(packet) >= 2 else -1
        if mid in self._received:
            self._received.discard(mid)
            return self._send_pubcomp(mid)
        return rc
