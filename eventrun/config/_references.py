"""Reference checks across the whole config, run once the models validate: connection
names exist where triggers and destinations name them, ``function:NAME`` names a function,
HTTP routes are unique. Each problem is ``(key path, what is expected, value)``; the
:class:`~eventrun.config.Config` validator turns them into one error listing every one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._errors import format_path
from ._plugins import plugin_models
from ._routing import RouteRule
from ._triggers import HttpTrigger, TriggerConfig
from ._types import parse_destination, render_value

if TYPE_CHECKING:
    from ._root import Config

__all__ = ["Problem", "connection_section", "cross_check"]

_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONNECTION_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CONNECTION_SECTION = {
    "kafka": "kafka",
    "redis_streams": "redis",
    "sqs": "sqs",
    "redis": "redis",
    "kinesis": "kinesis",
    "dynamodb_streams": "dynamodb",
}


def connection_section(kind: str) -> str | None:
    """The ``connections`` section a trigger or destination kind names connections in
    (a plugin kind's own section, when the plugin has a connection model)."""
    section = _CONNECTION_SECTION.get(kind)
    if section is None and kind in plugin_models().connections:
        return kind
    return section


Problem = tuple[list[str | int], str, str | None]


def cross_check(config: Config) -> Iterator[Problem]:
    for section in ("kafka", "redis", "sqs", "kinesis", "dynamodb", *plugin_models().connections):
        for name in getattr(config.connections, section, {}):
            if not _CONNECTION_NAME.fullmatch(name):
                yield (
                    ["connections", section, name],
                    "connection names must be letters, digits, '.', '-' and '_'",
                    render_value(name),
                )
    yield from _check_bindings(config)
    http_routes: dict[str, tuple[frozenset[str], list[str | int]]] = {}
    for fname, fn in config.functions.items():
        base: list[str | int] = ["functions", fname]
        if not _FUNCTION_NAME.fullmatch(fname):
            yield (base, "function names must be 1-64 letters, digits, - and _", None)
        for key in ("on_success", "on_failure"):
            dest = getattr(fn.destinations, key)
            if dest is not None:
                yield from _check_ref(config, [*base, "destinations", key], dest)
        for i, trigger in enumerate(fn.triggers):
            loc = [*base, "triggers", i, trigger.kind]
            yield from _check_trigger(config, loc, trigger)
            if isinstance(trigger.spec, HttpTrigger):
                yield from _check_route(http_routes, loc, trigger.spec)


def _check_bindings(config: Config) -> Iterator[Problem]:
    for key, binding in config.bindings.items():
        for section in ("sqs", "kafka"):
            name = getattr(binding, section)
            if name is not None and name not in getattr(config.connections, section):
                loc: list[str | int] = ["bindings", key, section]
                yield (loc, _must_name(config, section), render_value(name))


def _check_route(
    seen: dict[str, tuple[frozenset[str], list[str | int]]],
    loc: list[str | int],
    spec: HttpTrigger,
) -> Iterator[Problem]:
    methods = frozenset(spec.methods)
    if spec.path in seen:
        other_methods, other_loc = seen[spec.path]
        if "*" in methods or "*" in other_methods or methods & other_methods:
            yield (
                [*loc, "path"],
                f"must be unique among http triggers (same path and method as "
                f"{format_path(other_loc)})",
                render_value(spec.path),
            )
            return
    seen[spec.path] = (methods | seen.get(spec.path, (frozenset(), []))[0], loc)


def _check_trigger(
    config: Config, loc: list[str | int], trigger: TriggerConfig
) -> Iterator[Problem]:
    spec = trigger.spec
    conn = getattr(spec, "connection", None)
    if conn is not None and config.connection_for(trigger.kind, conn) is None:
        section = connection_section(trigger.kind) or trigger.kind
        yield ([*loc, "connection"], _must_name(config, section), render_value(conn))
    on_failure = getattr(spec, "on_failure", None)
    if on_failure is not None:
        yield from _check_ref(config, [*loc, "on_failure"], on_failure)
    on_success = getattr(spec, "on_success", None)
    if isinstance(on_success, RouteRule):
        for value, dest in on_success.routes.items():
            yield from _check_ref(config, [*loc, "on_success", "route", value], dest)
        if on_success.default is not None:
            yield from _check_ref(config, [*loc, "on_success", "default"], on_success.default)
    elif isinstance(on_success, list):
        for j, dest in enumerate(on_success):
            yield from _check_ref(config, [*loc, "on_success", j], dest)
    elif on_success is not None:
        yield from _check_ref(config, [*loc, "on_success"], on_success)


def _must_name(config: Config, section: str) -> str:
    names = ", ".join(getattr(config.connections, section, {})) or "none defined"
    return f"must name a connection in connections.{section} ({names})"


def _check_ref(config: Config, loc: list[str | int], dest: str) -> Iterator[Problem]:
    ref = parse_destination(dest)
    if ref.kind == "function" and ref.name not in config.functions:
        names = ", ".join(config.functions)
        yield (loc, f"must name a function in functions ({names})", render_value(dest))
    elif ref.connection is not None and config.connection_for(ref.kind, ref.connection) is None:
        section = connection_section(ref.kind) or ref.kind
        yield (loc, _must_name(config, section), render_value(dest))
