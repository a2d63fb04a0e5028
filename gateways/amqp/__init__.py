"""The AMQP gateway: messages routed to a queue bound to an exchange (v0.11's exclusive queue, or a
durable named one acked only once delivered) become events."""

from common.kinds import GatewayKind
from gateways.amqp.config import AmqpConfig, parse
from gateways.amqp.metrics import REGISTRY
from gateways.amqp.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: amqp-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  example: |-
    url: amqp://guest:guest@localhost:5672/
    exchangeName: events
    exchangeType: topic
    routingKey: orders.#
    queueDeclare:
      name: orders-gateway
"""

KIND: GatewayKind[AmqpConfig] = GatewayKind(
    name="amqp", parse=parse, run=run, demo=DEMO, says_when_serving=True, metrics=REGISTRY
)

__all__ = ["KIND", "AmqpConfig"]
