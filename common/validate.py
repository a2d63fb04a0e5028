"""Offline validation of a ConfigMap file: every key checked alone, then against the others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.configmap import EventSourceSpec
from common.errors import ConfigError
from common.kinds import GatewayKind


@dataclass(frozen=True)
class Verdict:
    """The outcome for one key: valid, or the reason it is not."""

    name: str
    error: ConfigError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def validate_all(
    kind: GatewayKind[Any], specs: Sequence[EventSourceSpec], reserved: frozenset[int] = frozenset()
) -> list[Verdict]:
    """One verdict per source, in file order; clashes between sources are reported on each side."""
    configs: dict[str, Any] = {}
    errors: dict[str, ConfigError] = {}
    for spec in specs:
        try:
            configs[spec.name] = kind.validate(spec.name, spec.data, spec.version)
        except ConfigError as exc:
            errors[spec.name] = exc
    for name, config in configs.items():
        try:
            kind.check_clashes(name, config, configs, reserved)
        except ConfigError as exc:
            errors[name] = exc
    return [Verdict(spec.name, errors.get(spec.name)) for spec in specs]


def precheck_for(
    kind: GatewayKind[Any], reserved: frozenset[int]
) -> Callable[[Sequence[EventSourceSpec]], dict[str, str]]:
    """The client's pre-check of a whole snapshot: each source checked alone and against the others.

    Run locally when the client has the kind installed, so two clashing sources are both reported,
    whichever would have started first.
    """

    def check(specs: Sequence[EventSourceSpec]) -> dict[str, str]:
        return {v.name: v.error.reason for v in validate_all(kind, specs, reserved) if v.error is not None}

    return check
