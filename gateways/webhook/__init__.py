"""The webhook gateway: HTTP requests to endpoints (port, path, method) become events, body byte for byte."""

from common.kinds import GatewayKind
from gateways.webhook.clashes import clashes
from gateways.webhook.config import WebhookConfig, parse
from gateways.webhook.metrics import REGISTRY
from gateways.webhook.router import ROUTER
from gateways.webhook.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: webhook-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  example: |-
    endpoint: /example
    method: POST
    port: "12000"
"""

KIND: GatewayKind[WebhookConfig] = GatewayKind(
    name="webhook",
    parse=parse,
    run=run,
    clashes=clashes,
    demo=DEMO,
    close=ROUTER.close,
    listen_on=ROUTER.listen_on,
    says_when_serving=True,
    metrics=REGISTRY,
)

__all__ = ["KIND", "WebhookConfig"]
