"""Building blocks of the config models: ranges, durations, destinations, problems.

Every validation failure raised here is a :class:`pydantic_core.PydanticCustomError`
of type ``er_problem`` whose context carries the sentence to show (``m``), an optional
key path below the failing location (``at``) and optionally the already rendered
offending value (``got``). :mod:`eventrun.config._errors` turns those, and pydantic's
own errors, into ``FILE: key.path: expectation, got VALUE`` lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from eventrun.common import redact_url

from ._duration import DURATION_PATTERN, format_duration, parse_duration
from ._plugins import plugin_models

__all__ = [
    "NO_VALUE",
    "ConfigModel",
    "Destination",
    "DestinationRef",
    "Duration",
    "Int",
    "Range",
    "Verbatim",
    "check_destination",
    "parse_destination",
    "problem",
    "render_value",
]


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable.

    ``coerce_numbers_to_str`` because YAML turns ``password: 1234`` or ``topics: [2024]``
    into numbers where a string is meant.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


_URL_IN_TEXT = re.compile(r"[A-Za-z][\w+.-]*://[^\s\"']+")


def _redact_urls(text: str) -> str:
    """Every URL in ``text`` through :func:`eventrun.common._urls.redact_url` (no password)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text) if "://" in text else text


def render_value(value: object) -> str:
    """Render an offending value for an error message: YAML-ish scalars, short JSON.

    Passwords embedded in URLs are masked, and long values are cut at 80 characters.
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(_redact_urls(value))
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, dict | list | tuple):
        try:
            text = json.dumps(_redacted(value), default=str, ensure_ascii=False)
        except (TypeError, ValueError):  # keys YAML allows and JSON does not (!!binary...)
            text = repr(_redacted(value))
        text = _redact_urls(text)
    else:
        text = repr(str(value))
    return text if len(text) <= 80 else text[:77] + "..."


_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)


def _redacted(value: object) -> object:
    """``value`` with the values of secret-looking keys replaced by ``***``."""
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


_NO_GOT = object()


def problem(message: str, *, at: str = "", got: object = _NO_GOT) -> PydanticCustomError:
    """An error for the translator: ``message`` says what is expected.

    ``at`` is a dotted path below the validated value (``"batch_size"`` for an error a
    model validator finds in one of its fields). ``got`` is the offending value; when
    omitted the translator shows the validator's input. A :class:`Verbatim` is shown
    as is (``got kafka and sqs``).
    """
    ctx: dict[str, Any] = {"m": message, "at": at}
    if isinstance(got, Verbatim):
        ctx["got"] = got.text
    elif got is not _NO_GOT:
        ctx["got"] = render_value(got)
    return PydanticCustomError("er_problem", "{m}", ctx)


@dataclass(frozen=True, slots=True)
class Verbatim:
    """A ``got`` text shown without quoting (``got kafka and sqs``, ``got nothing``)."""

    text: str


NO_VALUE = Verbatim("")
"""Pass as ``got`` to leave ``, got ...`` out of the message."""


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds for an int or duration field, with one message for both ends.

    ``forever`` additionally allows ``-1`` (Lambda's "no limit"). Used as ``Annotated``
    metadata; it also writes ``minimum``/``maximum`` into the JSON Schema and is read
    by the doc generator.
    """

    lo: float | None = None
    hi: float | None = None
    duration: bool = False
    forever: bool = False

    def describe(self) -> str:
        def fmt(v: float) -> str:
            if self.duration:
                return format_duration(v)
            return str(int(v)) if float(v).is_integer() else f"{v:g}"  # 67108864, not 6.7e+07

        if self.lo is not None and self.hi is not None:
            text = f"{fmt(self.lo)}..{fmt(self.hi)}"
        elif self.lo is not None:
            text = f">= {fmt(self.lo)}"
        else:
            text = f"<= {fmt(self.hi or 0)}"
        return f"-1 (forever) or {text}" if self.forever else text

    def check(self, value: float | None) -> float | None:
        if value is None or (self.forever and value == -1):
            return value
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise problem(f"must be {self.describe()}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        js = handler(schema)
        branches = js.get("anyOf", [js])
        for branch in branches:
            if branch.get("type") in ("integer", "number"):
                if self.lo is not None and not self.forever:
                    branch["minimum"] = self.lo
                if self.hi is not None:
                    branch["maximum"] = self.hi
        return js


class _DurationSchema:
    """Annotated marker: a duration (number of seconds or ``30s``-style string)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_duration,
            serialization=core_schema.plain_serializer_function_ser_schema(float),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "number"}, {"type": "string", "pattern": DURATION_PATTERN}],
            "x-duration": True,
        }


def _validate_duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise problem("must be a duration (seconds, or a string like 250ms, 30s, 5m, 2h)") from None


Duration = Annotated[float, _DurationSchema()]
"""Seconds as a float; accepts numbers or strings like ``250ms``, ``5m``."""


def _reject_bool(value: object) -> object:
    if isinstance(value, bool):
        raise problem("must be an integer")
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
"""An int that does not silently accept ``true`` as 1."""


# -- destinations ---------------------------------------------------------------------

_CONNECTED = {"sqs": "QUEUE", "kafka": "TOPIC", "redis": "STREAM", "kinesis": "STREAM"}
_NAMED = {"local": "NAME", "function": "NAME", "file": "PATH"}
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CONN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
DESTINATION_HELP = (
    "local:NAME, file:PATH, sqs:CONNECTION/QUEUE, kafka:CONNECTION/TOPIC, "
    "redis:CONNECTION/STREAM, kinesis:CONNECTION/STREAM, http(s)://URL, function:NAME, "
    "or PLUGIN:TARGET"
)


@dataclass(frozen=True, slots=True)
class DestinationRef:
    """A destination string taken apart: ``kafka:main/dlq`` -> kind, target, connection."""

    kind: str
    """``local``, ``file``, ``sqs``, ``kafka``, ``redis``, ``http``, ``https``,
    ``function`` or a plugin's kind."""
    target: str
    """Everything after ``KIND:``; for http(s) the whole URL."""
    connection: str | None = None
    """For sqs/kafka/redis: the connection name (``main``)."""
    name: str | None = None
    """Queue/topic/stream for sqs/kafka/redis; the name or path for local/function/file."""


def parse_destination(url: str) -> DestinationRef:
    """Split a destination string; raise :class:`ValueError` with the expected form."""
    kind, sep, rest = url.partition(":")
    if not sep or not _KIND.fullmatch(kind):
        raise ValueError(f"must be a destination ({DESTINATION_HELP})")
    if kind in ("http", "https"):
        host = rest[2:].split("/", 1)[0] if rest.startswith("//") else ""
        if not host:
            raise ValueError(f"must be an {kind}:// URL with a host")
        return DestinationRef(kind, url)
    if kind in _CONNECTED or kind in plugin_models().connections:
        conn, slash, name = rest.partition("/")
        if not slash or not name or not _CONN_NAME.fullmatch(conn):
            raise ValueError(f"must be {kind}:CONNECTION/{_CONNECTED.get(kind, 'TARGET')}")
        return DestinationRef(kind, rest, conn, name)
    if not rest:
        raise ValueError(f"must be {kind}:{_NAMED.get(kind, 'TARGET')}")
    if kind in _NAMED:
        return DestinationRef(kind, rest, None, rest)
    return DestinationRef(kind, rest)


def check_destination(url: str) -> str:
    """Validator form of :func:`parse_destination`."""
    try:
        parse_destination(url)
    except ValueError as exc:
        raise problem(str(exc)) from None
    return url


Destination = Annotated[str, AfterValidator(check_destination)]
"""A destination string, validated for form (references are checked by ``Config``)."""
