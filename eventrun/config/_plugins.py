"""Config models contributed by installed plugins.

A plugin kind names its trigger settings model in the ``eventrun.triggers`` entry point
group and its connection model in ``eventrun.connections`` (see docs/plugins.md). They are
loaded on first use — when a config is validated or the schema is built, never when
``eventrun.config`` is imported, so a plugin's config module may import ``eventrun.abc``
freely. A kind that fails to load is remembered with the reason, so a config that uses it
gets that reason instead of "unknown key".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from pydantic import BaseModel

__all__ = ["CONNECTION_GROUP", "TRIGGER_GROUP", "PluginModels", "plugin_models"]

TRIGGER_GROUP = "eventrun.triggers"
CONNECTION_GROUP = "eventrun.connections"

BUILTIN_TRIGGERS = frozenset(
    {"sqs", "kafka", "redis_streams", "kinesis", "dynamodb_streams", "http", "cron", "filewatch"}
)
BUILTIN_CONNECTIONS = frozenset({"kafka", "redis", "sqs", "kinesis", "dynamodb"})


@dataclass(frozen=True, slots=True)
class PluginModels:
    """What the installed plugins add to ``eventrun.yaml``."""

    triggers: dict[str, type[BaseModel]] = field(default_factory=dict)
    """Trigger kind -> model of its settings (``triggers: [{KIND: {...}}]``)."""
    connections: dict[str, type[BaseModel]] = field(default_factory=dict)
    """Connection kind -> model of one ``connections.KIND.NAME``."""
    broken: dict[str, str] = field(default_factory=dict)
    """Kind -> why its model could not be loaded (import error, not a model...)."""


@functools.cache
def plugin_models() -> PluginModels:
    """The models of every installed plugin kind (loaded once per process)."""
    found = PluginModels()
    for group, builtin, into in (
        (TRIGGER_GROUP, BUILTIN_TRIGGERS, found.triggers),
        (CONNECTION_GROUP, BUILTIN_CONNECTIONS, found.connections),
    ):
        for ep in sorted(entry_points(group=group), key=lambda ep: ep.name):
            if ep.name in builtin or ep.name in into:
                continue  # built-in kinds cannot be replaced; the first of a name wins
            try:
                model = ep.load()
            except Exception as exc:  # any failure of a third party's import
                found.broken[ep.name] = f"{ep.value} failed to import: {exc!r}"
                continue
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                found.broken[ep.name] = f"{ep.value} is not a pydantic model"
                continue
            into[ep.name] = model
    return found
