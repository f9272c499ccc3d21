"""eventrun: a self-hosted, Lambda-compatible event runtime.

One daemon reads ``eventrun.yaml``, starts event sources (SQS, Kafka and Redis Streams
pollers; HTTP, cron and file-watch push sources) and runs Lambda-style handlers in worker
processes with Lambda's event-source-mapping semantics. See README.md.

Importing ``eventrun`` never imports a broker client (aiokafka, aiobotocore, redis).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from eventrun.abc import (
    InvokeOutcome,
    OutMessage,
    Poller,
    PushSource,
    Record,
    Route,
    Sink,
    SinkSpec,
    SourceContext,
    SourceSpec,
)
from eventrun.exceptions import (
    ConfigError,
    EventrunError,
    FunctionSaturated,
    HandlerImportError,
    PluginNotFound,
    SinkError,
    SinkRejected,
    SinkUnavailable,
    SourceAuthError,
    SourceError,
    SourceUnavailable,
)

if TYPE_CHECKING:
    from eventrun.config import Config, LoadedConfig, load_config
    from eventrun.runtime import Runtime

_LAZY = {
    "Config": "eventrun.config",
    "LoadedConfig": "eventrun.config",
    "load_config": "eventrun.config",
    "Runtime": "eventrun.runtime",
}


def __getattr__(name: str) -> Any:
    """Import the heavier parts (config models, the runtime) on first use, so that
    ``import eventrun`` and the worker processes stay light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventrun' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


try:
    __version__ = version("eventrun")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Config",
    "ConfigError",
    "EventrunError",
    "FunctionSaturated",
    "HandlerImportError",
    "InvokeOutcome",
    "LoadedConfig",
    "OutMessage",
    "PluginNotFound",
    "Poller",
    "PushSource",
    "Record",
    "Route",
    "Runtime",
    "Sink",
    "SinkError",
    "SinkRejected",
    "SinkSpec",
    "SinkUnavailable",
    "SourceAuthError",
    "SourceContext",
    "SourceError",
    "SourceSpec",
    "SourceUnavailable",
    "__version__",
    "load_config",
]
