"""Lambda event filtering: the EventBridge pattern language, evaluated per record.

A record passes when it matches ANY of the trigger's patterns (OR across filters). Within a
pattern every named field must match (AND); a list of values is OR; a field the pattern
names must exist in the record (except under ``{"exists": false}``); fields the pattern does
not name are ignored. When the record's value is an array, it matches if any element does.

Supported matchers: literal values (strings exact and case-sensitive; numbers by their JSON
representation, as Lambda does; ``true``/``false``/``null``), ``prefix``, ``suffix``,
``equals-ignore-case``, ``prefix``/``suffix`` with ``equals-ignore-case``, ``anything-but``
(a value, a list, or ``{"prefix"|"suffix"|"equals-ignore-case": ...}``), ``numeric``
(``=``, ``<``, ``<=``, ``>``, ``>=`` pairs), ``exists``, ``wildcard`` (``*``; every other
character is literal), ``cidr`` (an IPv4 or IPv6 address in the network), and ``$or``.

The data field (SQS ``body``, Kafka ``value``, stream ``data``) is decoded as JSON when it
is JSON; otherwise it is matched as a plain string, so a JSON pattern on a non-JSON body
does not match (the record is filtered out, as Lambda drops it).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["FilterError", "RecordFilter"]

_MISSING: Any = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_ANYTHING_BUT_OPS = frozenset({"prefix", "suffix", "equals-ignore-case", "wildcard"})


class FilterError(ValueError):
    """A filter pattern is not valid (raised when compiling, so at load time)."""


class RecordFilter:
    """Compiled ``filter_criteria``: :meth:`matches` takes a record-shaped mapping."""

    def __init__(self, patterns: Sequence[Mapping[str, Any]]) -> None:
        for pattern in patterns:
            _validate(pattern, "pattern")
        self._patterns = [dict(p) for p in patterns]

    def matches(self, document: Mapping[str, Any]) -> bool:
        return any(_match_object(p, document) for p in self._patterns)

    def matches_record(self, event: Mapping[str, Any], data_key: str, data: bytes) -> bool:
        """Match a Lambda-shaped record whose ``data_key`` field is replaced by the decoded
        payload (JSON when it parses, else the UTF-8 text)."""
        document = dict(event)
        document[data_key] = decode_data(data)
        return self.matches(document)


def decode_data(data: bytes) -> Any:
    """The payload as filters see it: parsed JSON, else text, else None.

    JSON nested deeper than the parser's recursion limit (``[`` 200,000 times) is text:
    a malformed record is filtered like any other, never an exception in the poll loop.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None


def _validate(pattern: Any, where: str) -> None:
    if not isinstance(pattern, Mapping):
        raise FilterError(f"{where}: must be a JSON object, got {pattern!r}")
    for key, value in pattern.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise FilterError(f"{where}.$or: must be a list of at least 2 patterns")
            for i, sub in enumerate(value):
                _validate(sub, f"{where}.$or[{i}]")
        elif isinstance(value, Mapping):
            _validate(value, f"{where}.{key}")
        elif isinstance(value, list):
            for matcher in value:
                if isinstance(matcher, Mapping):
                    _validate_matcher(matcher, f"{where}.{key}")
        else:
            raise FilterError(
                f"{where}.{key}: must be a list of values or an object, got {value!r}"
            )


def _validate_matcher(matcher: Mapping[str, Any], where: str) -> None:
    if len(matcher) != 1:
        raise FilterError(f"{where}: a matcher object has exactly one operator, got {matcher!r}")
    ((op, arg),) = matcher.items()
    known = {
        "prefix",
        "suffix",
        "equals-ignore-case",
        "anything-but",
        "numeric",
        "exists",
        "wildcard",
        "cidr",
    }
    if op not in known:
        raise FilterError(f"{where}: unknown operator {op!r}; expected one of {sorted(known)}")
    if op == "numeric":
        if not isinstance(arg, list) or not arg or len(arg) % 2:
            raise FilterError(f"{where}.numeric: must be [op, number, ...], got {arg!r}")
        for i in range(0, len(arg), 2):
            if arg[i] not in _NUMERIC_OPS or not _is_number(arg[i + 1]):
                raise FilterError(f"{where}.numeric: bad comparison {arg[i : i + 2]!r}")
    if op == "exists" and not isinstance(arg, bool):
        raise FilterError(f"{where}.exists: must be true or false, got {arg!r}")
    if op == "cidr" and (not isinstance(arg, str) or _network(arg) is None):
        raise FilterError(f"{where}.cidr: must be a network like 10.0.0.0/24, got {arg!r}")
    if (
        op == "anything-but"
        and isinstance(arg, Mapping)
        and (len(arg) != 1 or next(iter(arg)) not in _ANYTHING_BUT_OPS)
    ):
        raise FilterError(
            f"{where}.anything-but: must be a value, a list, or one of "
            f"{sorted(_ANYTHING_BUT_OPS)}, got {arg!r}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _match_object(pattern: Mapping[str, Any], document: Any) -> bool:
    if not isinstance(document, Mapping):
        return False
    for key, rule in pattern.items():
        if key == "$or":
            if not any(_match_object(sub, document) for sub in rule):
                return False
            continue
        value = document.get(key, _MISSING)
        if isinstance(rule, Mapping):
            if value is _MISSING:
                return False
            items = value if isinstance(value, list) else [value]
            if not any(_match_object(rule, item) for item in items):
                return False
        elif not _match_values(rule, value):
            return False
    return True


def _match_values(matchers: list[Any], value: Any) -> bool:
    if value is _MISSING:
        return any(isinstance(m, Mapping) and m.get("exists") is False for m in matchers)
    values = value if isinstance(value, list) else [value]
    return any(_match_one(m, v) for m in matchers for v in values)


def _match_one(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        return _literal_equal(matcher, value)
    ((op, arg),) = matcher.items()
    if op == "exists":
        return bool(arg)
    if op == "anything-but":
        return not _anything_but_hits(arg, value)
    if op == "numeric":
        return _is_number(value) and all(
            _NUMERIC_OPS[arg[i]](float(value), float(arg[i + 1])) for i in range(0, len(arg), 2)
        )
    if not isinstance(value, str):
        return False
    return _string_op(op, arg, value)


def _string_op(op: str, arg: Any, value: str) -> bool:
    if isinstance(arg, Mapping):  # {"prefix": {"equals-ignore-case": "x"}}
        arg = str(next(iter(arg.values()))).lower()
        value = value.lower()
    if op == "prefix":
        return value.startswith(arg)
    if op == "suffix":
        return value.endswith(arg)
    if op == "equals-ignore-case":
        return value.lower() == str(arg).lower()
    if op == "cidr":
        network = _network(arg)
        try:
            return network is not None and ipaddress.ip_address(value) in network
        except ValueError:  # not an address
            return False
    return _wildcard(arg).fullmatch(value) is not None  # "wildcard", the one left


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters (newlines too); everything else is literal."""
    return re.compile(".*".join(map(re.escape, pattern.split("*"))), re.DOTALL)


@functools.lru_cache(maxsize=256)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _anything_but_hits(arg: Any, value: Any) -> bool:
    if isinstance(arg, Mapping):
        ((op, inner),) = arg.items()
        if not isinstance(value, str):
            return False
        inner_values = inner if isinstance(inner, list) else [inner]
        return any(_string_op(op, v, value) for v in inner_values)
    excluded = arg if isinstance(arg, list) else [arg]
    return any(_literal_equal(e, value) for e in excluded)


def _literal_equal(expected: Any, value: Any) -> bool:
    if expected is None or isinstance(expected, bool):
        return value is expected
    if _is_number(expected):
        return _is_number(value) and json.dumps(expected) == json.dumps(value)
    return isinstance(value, str) and value == expected
