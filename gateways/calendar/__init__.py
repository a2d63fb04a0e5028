"""The calendar gateway: events on a cron schedule, a fixed interval or an RFC 5545 recurrence."""

from common.kinds import GatewayKind
from gateways.calendar.config import CalendarConfig, parse
from gateways.calendar.source import run

DEMO = """\
kind: ConfigMap
apiVersion: v1
metadata:
  name: calendar-event-source
  labels:
    argo-events-event-source-version: v0.10
data:
  every-2s: |-
    interval: 2s
    userPayload: "{\\"hello\\": \\"world\\"}"
  every-minute-in-new-york: |-
    schedule: "* * * * *"
    timezone: America/New_York
    userPayload:
      team: platform
"""

KIND: GatewayKind[CalendarConfig] = GatewayKind(name="calendar", parse=parse, run=run, demo=DEMO)

__all__ = ["KIND", "CalendarConfig"]
