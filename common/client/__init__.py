"""The gateway client: event-source config, the source lifecycle, CloudEvents, delivery to subscribers."""
