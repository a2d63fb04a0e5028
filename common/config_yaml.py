"""The first step of every gateway's ``parse``: a source's YAML ``data`` as a mapping of known fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from common.errors import ConfigError


def load_fields(data: str, fields: Sequence[str], *, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The mapping in ``data`` and a ``{field: problem}`` for each key not in ``fields``.

    Unknown keys are problems, not ignored: a typo such as ``shedule`` would otherwise leave a source
    that silently never does what was meant. Not YAML, or not a mapping, raises ``ConfigError`` on
    ``data`` at once; an empty value is an empty mapping.
    """
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ConfigError({"data": f"not valid YAML: {exc}"}) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError({"data": f"must be a mapping of {kind} fields"})
    known = ", ".join(fields)
    problems = {str(key): f"unknown field (known fields: {known})" for key in raw if key not in fields}
    return raw, problems
