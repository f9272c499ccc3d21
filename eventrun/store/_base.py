"""The durable store: async invocation queues, ``local:`` queues and DLQs, source state.

One interface, two backends: SQLite (embedded default, ``sqlite:///state.db``) and Redis
(``redis://host:6379/0``, shared by replicas). Queue names are namespaced strings:
``async:FUNCTION`` for queued asynchronous invocations, ``local:NAME`` for local queues and
dead-letter queues.

Queues are lease-based so nothing is lost when a daemon dies: :meth:`Store.lease` hides
entries until ``now + lease_s``; :meth:`Store.ack` deletes them; an entry whose lease
expires (its daemon died) becomes available to :meth:`Store.lease` again.

Queues are bounded (:class:`QueueLimits`, ``store.max_queue_depth`` and
``store.max_queue_bytes``): a put that would take a non-empty queue over either cap
raises :class:`~eventrun.exceptions.QueueFull` and writes nothing. A put into an empty
queue is always taken, so one batch larger than a cap can still be delivered. Both
backends keep each queue's depth and payload bytes as counters updated with every
write, so the check costs one lookup, not a scan. :class:`FullQueues` counts the
refusals for ``/metrics`` and logs ``queue.full`` once per streak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import structlog

from eventrun.exceptions import QueueFull

__all__ = ["FullQueues", "QueueEntry", "QueueLimits", "Store", "StoreFailures"]

_log = structlog.get_logger("eventrun.store")

DEFAULT_MAX_DEPTH = 100_000
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(slots=True, frozen=True)
class QueueLimits:
    """The most any one store queue may hold (``store.max_queue_depth`` / ``_bytes``)."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self, queue: str, depth: int, size: int, adding: int, adding_bytes: int) -> None:
        """Raise QueueFull when a non-empty queue of ``depth`` entries and ``size`` bytes
        cannot take ``adding`` more entries of ``adding_bytes`` in all."""
        if depth <= 0:
            return
        if depth + adding > self.max_depth:
            raise QueueFull(queue, "depth", self.max_depth)
        if size + adding_bytes > self.max_bytes:
            raise QueueFull(queue, "bytes", self.max_bytes)


class FullQueues:
    """Refused puts per queue (``eventrun_queue_full_total``); logs ``queue.full`` on the
    first refusal after the queue last took a put, not on every refusal."""

    __slots__ = ("_full", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._full: set[str] = set()

    def refused(self, exc: QueueFull) -> None:
        self.counts[exc.queue] = self.counts.get(exc.queue, 0) + 1
        if exc.queue not in self._full:
            self._full.add(exc.queue)
            _log.warning("queue.full", queue=exc.queue, limit=exc.what, cap=exc.cap)

    def accepted(self, queue: str) -> None:
        if self._full:
            self._full.discard(queue)


class StoreFailures:
    """Failed store operations per reason (``eventrun_store_failures_total``):
    ``disk_full`` (the SQLite file's filesystem had no space: nothing was written) or
    ``error``. Logs ``store.failing`` on the first failure after a success and
    ``store.recovered`` on the first success after failures, not on every call."""

    __slots__ = ("_failing", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._failing = False

    def failed(self, reason: str, error: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if not self._failing:
            self._failing = True
            _log.error("store.failing", reason=reason, error=error)

    def succeeded(self) -> None:
        if self._failing:
            self._failing = False
            _log.warning("store.recovered", failures=dict(self.counts))


@dataclass(slots=True, frozen=True)
class QueueEntry:
    """One entry of a store queue."""

    id: str
    queue: str
    payload: bytes
    enqueued_at: float
    """Epoch seconds when first put (for maximum_event_age)."""
    available_at: float = 0.0
    attempts: int = 0
    """How many times processing was attempted and failed (set by :meth:`Store.retry`)."""
    meta: Mapping[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """What the runtime needs from a durable store. Every method may raise StoreError."""

    full: FullQueues
    """Puts refused with QueueFull, per queue."""

    failures: StoreFailures
    """Operations that failed with StoreError (not QueueFull), per reason."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def put(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        available_at: float = 0.0,
        meta: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Append entries durably (committed before returning); return their ids in order.
        Raises QueueFull (and writes nothing) when the queue cannot take them all."""
        ...

    async def lease(
        self, queue: str, *, now: float, limit: int, lease_s: float
    ) -> list[QueueEntry]:
        """Take up to ``limit`` available entries (``available_at <= now``, not leased),
        oldest first, hiding them until ``now + lease_s``."""
        ...

    async def ack(self, queue: str, ids: Sequence[str]) -> None:
        """Delete entries (processed, or moved elsewhere). Unknown ids are ignored."""
        ...

    async def retry(self, queue: str, entry_id: str, *, available_at: float, attempts: int) -> None:
        """Make a leased entry available again at ``available_at`` with ``attempts``."""
        ...

    async def peek(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueueEntry]:
        """Entries in order without leasing them (for `eventrun dlq list`)."""
        ...

    async def get(self, queue: str, entry_id: str) -> QueueEntry | None: ...

    async def depth(self, queue: str) -> int: ...

    async def usage(self, queue: str) -> tuple[int, int]:
        """``(entries, payload bytes)`` of ``queue``, from the counters the caps use."""
        ...

    async def trim(self, queue: str, *, enqueued_before: float, keep: int | None = None) -> int:
        """Delete the entries put before ``enqueued_before`` (epoch seconds), and then the
        oldest ones beyond ``keep`` entries; return how many. For retention of ``local:``
        queues, whose entries are never leased."""
        ...

    async def queues(self) -> list[str]:
        """Names of every queue holding at least one entry."""
        ...

    async def purge(self, queue: str) -> int:
        """Delete every entry of ``queue``; return how many."""
        ...

    async def kv_get(self, key: str) -> bytes | None: ...

    async def kv_set(self, key: str, value: bytes) -> None: ...

    async def kv_claim(self, key: str, ttl_s: float, *, now: float) -> bool:
        """Set ``key`` if absent or expired; True if this caller won the claim."""
        ...

    async def kv_release(self, key: str) -> None:
        """Delete the claim on ``key`` (a key with a TTL; a plain value stays)."""
        ...
