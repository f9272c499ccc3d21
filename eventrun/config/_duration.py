"""Durations as people write them in ``eventrun.yaml``.

A duration is a number of seconds (``30``, ``0.5``) or a string of one or more
``<number><unit>`` parts with units ``ms``, ``s``, ``m``, ``h``, ``d``: ``250ms``,
``30s``, ``1.5s``, ``5m``, ``2h``, ``7d``, ``1m30s``. A bare numeric string (``"30"``,
what ``${VAR}`` interpolation produces) is seconds too. Everything is parsed at the
config boundary into ``float`` seconds; nothing past the config layer sees a string.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)"
_WHOLE = re.compile(rf"(?:{_PART})+")
_PARTS = re.compile(_PART)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

DURATION_PATTERN = rf"^\s*(-?\d+(\.\d+)?|({_PART})+)\s*$"
"""The string form, as a JSON Schema ``pattern`` (editors use it for completion)."""


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds.

    Accepts int/float (seconds) and the strings described in the module docstring.
    Raises :class:`ValueError` for anything else: booleans, NaN/infinity, empty or
    unknown units. The sign is kept (``-1`` means "forever" for some keys); range
    checks belong to the caller.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(f"{type(value).__name__} is not a duration")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    return seconds


def _parse_text(text: str) -> float:
    if _NUMBER.fullmatch(text):
        return float(text)
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if not _WHOLE.fullmatch(body):
        raise ValueError(f"not a duration: {text!r}")
    total = sum(float(num) * _UNITS[unit] for num, unit in _PARTS.findall(body))
    return -total if negative else total


def format_duration(seconds: float) -> str:
    """Render seconds the way a person would write them: 0.5 -> ``500ms``, 900 -> ``15m``.

    The inverse of :func:`parse_duration` for the values that appear in defaults and
    ranges; used in error messages and generated docs.
    """
    if seconds < 0:
        return f"-{format_duration(-seconds)}"
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"
