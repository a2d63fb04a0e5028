"""The MQTT gateway: messages on a topic filter (QoS 0, 1 or 2; MQTT 3.1.1 or 5; a persistent
session that keeps what comes while disconnected) become events."""

from common.kinds import GatewayKind
from gateways.mqtt.config import MqttConfig, clashes, parse
from gateways.mqtt.metrics import REGISTRY
from gateways.mqtt.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: mqtt-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  example: |-
    url: tcp://localhost:1883
    topic: sensors/#
    clientId: gateway-demo
"""

KIND: GatewayKind[MqttConfig] = GatewayKind(
    name="mqtt", parse=parse, run=run, clashes=clashes, demo=DEMO, says_when_serving=True, metrics=REGISTRY
)

__all__ = ["KIND", "MqttConfig"]
