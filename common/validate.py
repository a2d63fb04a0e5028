"""Validation of a whole set of event sources: every key checked alone, then against the others.

Used offline (``gateway validate``) and by the client before it starts anything. Sources already
running with an unchanged config (``settled``) keep what they hold: a newcomer that clashes with one
is refused alone, and the running source is never refused for it. Newcomers that clash only with
each other are refused on each side, whichever would have started first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
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


Parsed = dict[tuple[str, str, str], Any]
"""(name, data, version) -> the config, or the ``ConfigError`` it raised: what was checked before."""


def _parse(kind: GatewayKind[Any], spec: EventSourceSpec, cache: Parsed) -> Any:
    key = (spec.name, spec.data, spec.version)
    if key not in cache:
        try:
            cache[key] = kind.validate(spec.name, spec.data, spec.version)
        except ConfigError as exc:
            cache[key] = exc
        except Exception as exc:  # noqa: BLE001 - a kind's fault is this source's verdict, not the run's end
            cache[key] = ConfigError({"data": _unexpected(exc)}, source=spec.name)
    found = cache[key]
    if isinstance(found, ConfigError):
        raise found
    return found


def _clashes(
    kind: GatewayKind[Any], name: str, config: Any, others: Mapping[str, Any], reserved: frozenset[int]
) -> ConfigError | None:
    try:
        kind.check_clashes(name, config, others, reserved)
    except ConfigError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - as in _parse
        return ConfigError({"data": _unexpected(exc)}, source=name)
    return None


def _unexpected(exc: Exception) -> str:
    return f"could not be checked: {type(exc).__name__}: {exc}"


def validate_all(
    kind: GatewayKind[Any],
    specs: Sequence[EventSourceSpec],
    reserved: frozenset[int] = frozenset(),
    settled: Collection[str] = frozenset(),
    *,
    cache: Parsed | None = None,
) -> list[Verdict]:
    """One verdict per source, in file order.

    ``settled`` names sources running with this very config: they are never refused, and a newcomer
    that clashes with one of them is refused alone. Newcomers that clash with each other are refused
    on each side. ``cache`` keeps configs parsed before, so an unchanged source is not parsed again.
    """
    parsed: Parsed = {} if cache is None else cache
    standing: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    errors: dict[str, ConfigError] = {}
    for spec in specs:
        try:
            config = _parse(kind, spec, parsed)
        except ConfigError as exc:
            if spec.name not in settled:  # a running source's fate is its server's, not this check's
                errors[spec.name] = exc
            continue
        (standing if spec.name in settled else pending)[spec.name] = config
    for name, config in list(pending.items()):
        error = _clashes(kind, name, config, standing, reserved)
        if error is not None:
            errors[name] = error
            del pending[name]
    clashing: dict[str, ConfigError] = {}
    for name, config in pending.items():
        error = _clashes(kind, name, config, pending, reserved)
        if error is not None:
            clashing[name] = error
    errors.update(clashing)
    return [Verdict(spec.name, errors.get(spec.name)) for spec in specs]


def precheck_for(
    kind: GatewayKind[Any], reserved: frozenset[int]
) -> Callable[[Sequence[EventSourceSpec], Collection[str]], dict[str, str]]:
    """The client's pre-check of a whole snapshot: each source checked alone and against the others.

    Run locally when the client has the kind installed, so two clashing newcomers are both reported,
    whichever would have started first, and a newcomer that clashes with a running source is refused
    without touching it. Configs parsed for one snapshot are kept for the next while unchanged.
    """
    cache: Parsed = {}

    def check(specs: Sequence[EventSourceSpec], settled: Collection[str] = frozenset()) -> dict[str, str]:
        current = {(spec.name, spec.data, spec.version) for spec in specs}
        for key in [key for key in cache if key not in current]:
            del cache[key]
        verdicts = validate_all(kind, specs, reserved, settled, cache=cache)
        return {v.name: v.error.reason for v in verdicts if v.error is not None}

    return check
