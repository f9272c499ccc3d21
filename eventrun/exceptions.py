"""Every exception eventrun raises, in one place.

The hierarchy::

    EventrunError                 base for everything eventrun raises (exit 1)
    ├── ConfigError               bad config: names file, key path, value, expectation (exit 2)
    ├── PluginNotFound            unknown source/sink kind or missing extra (exit 2)
    ├── HandlerImportError        a handler string cannot be imported (exit 2)
    ├── SourceError               a source failed
    │   ├── SourceUnavailable     connect/timeout/throttle: retryable, the poll loop backs off
    │   └── SourceAuthError       credentials/permissions: not retryable
    ├── SinkError                 a sink failed
    │   ├── SinkUnavailable       retryable: the record waits and is sent again
    │   └── SinkRejected          the destination refused the record (too large, invalid)
    ├── WorkerError               the worker pool could not run an invocation
    │   └── FunctionSaturated     concurrency limit reached (HTTP 429 TooManyRequestsException)
    ├── StoreError                the embedded store failed
    │   └── QueueFull             a store queue is at its depth or bytes cap (HTTP 429)
    ├── DlqError                  a DLQ request that cannot be served (exit 2, HTTP 400/404)
    ├── DaemonError               talking to a running daemon failed (CLI client side)
    └── ShutdownTimeout           the drain grace period ran out with work in flight

Handler failures are *outcomes* (retry, bisect, DLQ), never exceptions of the runtime:
they travel as :class:`eventrun.workers.InvokeResult` values with Lambda's error JSON.

Library exceptions (aiokafka, botocore, redis) are translated at the adapter boundary,
``raise SourceUnavailable(...) from exc``, and nowhere else.
"""

from __future__ import annotations

from typing import ClassVar

from eventrun.common import one_line

__all__ = [
    "ConfigError",
    "DaemonError",
    "DlqError",
    "EventrunError",
    "FunctionSaturated",
    "HandlerImportError",
    "PluginNotFound",
    "QueueFull",
    "ShutdownTimeout",
    "SinkError",
    "SinkRejected",
    "SinkUnavailable",
    "SourceAuthError",
    "SourceError",
    "SourceUnavailable",
    "StoreError",
    "WorkerError",
]


class EventrunError(Exception):
    """Base class of every error eventrun raises."""

    exit_code: ClassVar[int] = 1
    retryable: ClassVar[bool] = False


class ConfigError(EventrunError):
    """The configuration is invalid.

    The message is one line: ``FILE: KEY.PATH: what is expected, got VALUE``.
    ``problems`` holds every such line when several keys are wrong.
    """

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.problems = [one_line(p) for p in problems] if problems else [message]


class PluginNotFound(EventrunError):
    """No source or sink is registered for a kind, or its optional dependency is missing."""

    exit_code = 2


class HandlerImportError(EventrunError):
    """A handler string (``module:attr`` or ``path/file.attr``) cannot be imported."""

    exit_code = 2


class SourceError(EventrunError):
    """A source failed."""


class SourceUnavailable(SourceError):
    """The broker cannot be reached right now; the poll loop backs off and retries."""

    retryable = True


class SourceAuthError(SourceError):
    """The broker refused our credentials or permissions; retrying will not help."""


class SinkError(EventrunError):
    """A sink failed."""


class SinkUnavailable(SinkError):
    """The destination cannot be reached right now; the record is kept and sent again."""

    retryable = True


class SinkRejected(SinkError):
    """The destination refused the record itself (too large, malformed, unknown queue)."""


class WorkerError(EventrunError):
    """The worker pool could not run an invocation (not a handler failure)."""


class FunctionSaturated(WorkerError):
    """Every slot of the function's ``concurrency`` is busy."""

    retryable = True


class StoreError(EventrunError):
    """The embedded store (SQLite or Redis) failed."""

    retryable = True


class QueueFull(StoreError):
    """A put would take a store queue over ``store.max_queue_depth`` or
    ``store.max_queue_bytes``; nothing was written. Retry once the queue drains (the
    Invoke API answers 429; a ``local:`` sink keeps the record and sends it again)."""

    def __init__(self, queue: str, what: str, cap: int) -> None:
        unit = " entries" if what == "depth" else " bytes"
        super().__init__(
            f"queue {queue} is full: the put would exceed store.max_queue_{what} "
            f"({cap}{unit}); retry once it drains"
        )
        self.queue = queue
        self.what = what
        self.cap = cap


class DlqError(EventrunError):
    """A DLQ request that cannot be served (not a ``local:`` queue, unknown function...)."""

    exit_code = 2


class DaemonError(EventrunError):
    """The CLI could not talk to a running daemon, or the daemon answered with an error."""


class ShutdownTimeout(EventrunError):
    """The shutdown grace period ran out while work was still in flight."""
