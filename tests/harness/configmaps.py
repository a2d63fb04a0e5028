"""ConfigMap YAML for tests, in the v0.11 shape the client reads."""

from __future__ import annotations


def configmap(**sources: str) -> str:
    """A ConfigMap labelled ``v0.10`` holding one key per source, each value a literal YAML block
    (``data: {}`` when there are none: a ConfigMap without data is refused)."""
    body = "".join(
        f"  {name}: |-\n" + "".join(f"    {line}\n" for line in cfg.splitlines())
        for name, cfg in sources.items()
    )
    labels = "{argo-events-event-source-version: v0.10}"
    data = f"data:\n{body}" if body else "data: {}\n"
    return f"kind: ConfigMap\nmetadata:\n  name: cm\n  labels: {labels}\n{data}"
