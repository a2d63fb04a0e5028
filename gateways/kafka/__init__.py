"""The Kafka gateway: records of a topic (one partition as v0.11 read it, or a consumer group whose
offsets are committed after delivery) become events."""

from common.kinds import GatewayKind
from gateways.kafka.config import KafkaConfig, parse
from gateways.kafka.metrics import REGISTRY
from gateways.kafka.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: kafka-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  example: |-
    url: localhost:9092
    topic: orders
    consumerGroup:
      groupName: orders-gateway
"""

KIND: GatewayKind[KafkaConfig] = GatewayKind(
    name="kafka", parse=parse, run=run, demo=DEMO, says_when_serving=True, metrics=REGISTRY
)

__all__ = ["KIND", "KafkaConfig"]
