"""Is a payload JSON text a subscriber can read as it is? Strict RFC 8259, nesting bounded; no I/O.

Structured mode embeds a JSON payload as its own text, never a re-dump: a re-dump writes ``Infinity``
for ``1e400`` (not JSON) and rounds numbers a reader would keep. So the only question is whether the
bytes are JSON, asked without building what they describe.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects embedded as JSON; deeper text goes as ``data_base64``."""

_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
"""A JSON string, possessively, its closing quote optional: an unterminated one runs to the end of the
text in one match, so no input makes stripping strings quadratic."""
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_DECODER = json.JSONDecoder(
    parse_float=lambda _: None,  # validate, never convert: no float overflow, no int digit limit
    parse_int=lambda _: None,
    parse_constant=lambda name: _not_json(name),
    object_pairs_hook=lambda _: None,  # nor build dicts
    strict=True,  # control characters inside strings are not JSON
)


def json_text(payload: bytes, *, max_depth: int = MAX_DEPTH) -> str | None:
    """``payload`` as text when it is one RFC 8259 JSON value nested at most ``max_depth`` deep; else
    None."""
    try:
        text = payload.decode("utf-8")  # strict: no lone surrogates; a BOM stays and is refused below
    except UnicodeDecodeError:
        return None
    if not _shallow(text, max_depth):
        return None
    try:
        end = _value_end(text)
    except (ValueError, RecursionError):
        return None
    return None if text[end:].strip(" \t\r\n") else text


def embeddable(text: str) -> bool:
    """Whether JSON ``text`` reads back as itself from a structured event's ``data``. Not so: values
    readers take for "no data" (``null``; ``false``, ``0`` and ``""`` for the JavaScript SDK, which
    tests truthiness), a lone number too small for a double (it reads as ``0``) and one beyond a
    double's range, which a JavaScript reader holds as ``Infinity`` and its SDK refuses as data
    (nested in an array or object, either is accepted)."""
    value = text.strip(" \t\r\n")
    if value[:1] in "-0123456789":  # a lone number: as a reader holds it, a double
        number = float(value)
        return math.isfinite(number) and number != 0.0
    return value not in ("null", "false", '""')


class Payload:
    """A payload and its JSON text, looked for at most once (``json_text``) however often it is asked."""

    __slots__ = ("_looked", "_text", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._text: str | None = None
        self._looked = False

    @property
    def json(self) -> str | None:
        """``json_text(self.data)``."""
        if not self._looked:
            self._text, self._looked = json_text(self.data), True
        return self._text


def _value_end(text: str) -> int:
    """Where the JSON value at the start of ``text`` (after RFC 8259 whitespace) ends."""
    start = len(text) - len(text.lstrip(" \t\r\n"))
    _, end = _DECODER.raw_decode(text, start)
    return int(end)


def _shallow(text: str, max_depth: int) -> bool:
    """Whether arrays and objects in ``text`` nest at most ``max_depth`` deep and balance (strings
    ignored), in linear time whatever the text: checked before parsing, so no depth reaches the
    parser's recursion and no payload can make the check itself slow."""
    if text.count("[") + text.count("{") <= max_depth:  # the usual payload: no deeper than its brackets
        return True
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    depth = max(accumulate(map(_STEP.__getitem__, brackets)), default=0)
    return depth <= max_depth


def _not_json(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``: Python reads them, RFC 8259 does not."""
    raise ValueError(f"{name} is not JSON")
