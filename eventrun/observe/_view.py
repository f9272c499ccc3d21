"""What ``/metrics`` reads of the daemon: a read-only view, not the runtime.

The collector runs at scrape time over functions, sources, queues and destinations it
does not own. It is handed any object of this shape (the runtime is one), so metrics
depend on a shape, never on :class:`~eventrun.runtime.Runtime` and what that imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from eventrun.observe._depths import QueueDepths
    from eventrun.observe._metrics import RuntimeMetrics
    from eventrun.store import DlqRetention, FullQueues, StoreFailures

__all__ = ["MetricsView"]


class _Stats(Protocol):
    def statistics(self) -> Mapping[str, Any]: ...


class _FunctionView(Protocol):
    """A function as the collector reads it: config, worker pool and async queue."""

    @property
    def config(self) -> Any: ...  # FunctionConfig: .concurrency

    @property
    def runner(self) -> _Stats: ...

    @property
    def async_invoker(self) -> Any: ...  # .stats counters (_ASYNC_EVENTS)


class _SourceView(Protocol):
    """A trigger's source state: its function, dispatcher and poller (when it has them)."""

    @property
    def function(self) -> str: ...

    @property
    def dispatcher(self) -> _Stats | None: ...

    @property
    def poller(self) -> _Stats | None: ...


class _Delivered(Protocol):
    @property
    def sent(self) -> Mapping[str, int]: ...

    @property
    def failures(self) -> Mapping[str, int]: ...


class _StoreView(Protocol):
    @property
    def full(self) -> FullQueues: ...

    @property
    def failures(self) -> StoreFailures: ...


class MetricsView(Protocol):
    """What the ``/metrics`` collector reads at scrape time: a read-only view of the
    daemon (the runtime is one), so metrics never depend on the runtime class."""

    @property
    def metrics(self) -> RuntimeMetrics: ...

    @property
    def functions(self) -> Mapping[str, _FunctionView]: ...

    @property
    def sources(self) -> Mapping[str, _SourceView]: ...

    @property
    def depths(self) -> QueueDepths: ...

    @property
    def store(self) -> _StoreView: ...

    @property
    def retention(self) -> DlqRetention: ...

    @property
    def router(self) -> _Delivered | None: ...
