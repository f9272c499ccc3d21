"""The dispatcher: Lambda's event-source-mapping semantics between a source and a function.

What it does: batches records per shard lane (batch size, window, 6 MB), keeps order per
shard or key, filters, invokes, retries with backoff, bisects, honours partial batch
failures and record age, acks or releases exactly what was handled, and sends failure
records and results to destinations (sinks) — plus the queue of asynchronous invocations
(Lambda's ``Event`` invocation type) with its retries and DLQ.

May import: ``eventrun.store``, ``eventrun.plugins``, ``eventrun.abc``,
``eventrun.exceptions``, ``eventrun.common``; never a source, a sink module, the server or
the runtime (sinks are reached through ``eventrun.plugins``).

Exports: ``TriggerDispatcher`` and ``DispatchSettings``, ``RecordFilter``, ``Backoff``,
``SinkRouter`` and ``Publisher``, ``AsyncInvoker`` and ``AsyncSettings``, ``default_dlq``.
"""

from __future__ import annotations

from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings, default_dlq
from eventrun.dispatch._backoff import Backoff
from eventrun.dispatch._destinations import Publisher, SinkRouter
from eventrun.dispatch._dispatcher import DispatchSettings, TriggerDispatcher
from eventrun.dispatch._filters import RecordFilter

__all__ = [
    "AsyncInvoker",
    "AsyncSettings",
    "Backoff",
    "DispatchSettings",
    "Publisher",
    "RecordFilter",
    "SinkRouter",
    "TriggerDispatcher",
    "default_dlq",
]
