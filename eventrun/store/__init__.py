"""The durable store: queued async invocations, local queues, DLQs, checkpoints and leases.

What it does: the :class:`Store` interface, its SQLite (embedded, one daemon) and Redis
(shared by replicas) backends, opening one by URL or from config, the DLQ operations
(list, redrive, purge) used by the CLI and the HTTP API, and the DLQ retention sweep.

May import: ``eventrun.abc``, ``eventrun.config``, ``eventrun.exceptions``,
``eventrun.common``; never the dispatcher, the server or the sources.

Exports: ``Store``, ``QueueEntry``, ``QueueLimits``, ``FullQueues``, ``StoreFailures``,
``open_store``, ``open_configured_store``; ``DlqRetention``; ``dlq``, the DLQ operations
(``dlq.list_page``, ``dlq.redrive``, ``dlq.purge``...).
"""

from __future__ import annotations

from eventrun.store import _dlq as dlq
from eventrun.store._base import (
    FullQueues,
    QueueEntry,
    QueueLimits,
    Store,
    StoreFailures,
)
from eventrun.store._open import open_configured_store, open_store
from eventrun.store._retention import DlqRetention

__all__ = [
    "DlqRetention",
    "FullQueues",
    "QueueEntry",
    "QueueLimits",
    "Store",
    "StoreFailures",
    "dlq",
    "open_configured_store",
    "open_store",
]
