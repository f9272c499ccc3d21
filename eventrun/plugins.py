"""The plugin registry: source and sink kinds from the ``eventrun.sources`` /
``eventrun.sinks`` entry points. Built-ins register there exactly like third parties.

Plugin modules are imported lazily, on first use of their kind, so ``import eventrun``
never imports aiokafka, aiobotocore or redis.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import cast

from eventrun.abc import SinkFactory, SourceFactory
from eventrun.exceptions import PluginNotFound

__all__ = ["sink_factory", "sink_kinds", "source_factory", "source_kinds"]

_SOURCES = "eventrun.sources"
_SINKS = "eventrun.sinks"


@functools.cache
def _registry(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


def source_kinds() -> list[str]:
    return sorted(_registry(_SOURCES))


def sink_kinds() -> list[str]:
    return sorted(_registry(_SINKS))


def source_factory(kind: str) -> SourceFactory:
    return cast(SourceFactory, _load(_SOURCES, "source", kind))


def sink_factory(kind: str) -> SinkFactory:
    return cast(SinkFactory, _load(_SINKS, "sink", kind))


@functools.cache
def _load(group: str, what: str, kind: str) -> object:
    matches = [ep for ep in entry_points(group=group) if ep.name == kind]
    if not matches:
        known = ", ".join(sorted(_registry(group))) or "none"
        raise PluginNotFound(
            f"no {what} plugin is registered for kind {kind!r} (known: {known}); "
            f"install the package that provides it (entry point group {group!r})"
        )
    try:
        return matches[0].load()
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise PluginNotFound(
            f"the {what} kind {kind!r} needs a package that is not installed "
            f"({missing}): pip install {missing}"
        ) from exc
