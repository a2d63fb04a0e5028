"""The NATS gateway: messages on a subject (core NATS, a queue group or a JetStream durable) become events."""

from common.kinds import GatewayKind
from gateways.nats.config import NatsConfig, parse
from gateways.nats.metrics import REGISTRY
from gateways.nats.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: nats-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  example: |-
    url: nats://localhost:4222
    subject: foo
"""

KIND: GatewayKind[NatsConfig] = GatewayKind(
    name="nats", parse=parse, run=run, demo=DEMO, says_when_serving=True, metrics=REGISTRY
)

__all__ = ["KIND", "NatsConfig"]
