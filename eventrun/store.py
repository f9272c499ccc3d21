"""The durable store: async invocation queues, ``local:`` queues and DLQs, source state.

One interface, two backends: SQLite (embedded default, ``sqlite:///state.db``) and Redis
(``redis://host:6379/0``, shared by replicas). Queue names are namespaced strings:
``async:FUNCTION`` for queued asynchronous invocations, ``local:NAME`` for local queues and
dead-letter queues.

Queues are lease-based so nothing is lost when a daemon dies: :meth:`Store.lease` hides
entries until ``now + lease_s``; :meth:`Store.ack` deletes them; an entry whose lease
expires (its daemon died) becomes available to :meth:`Store.lease` again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = ["QueueEntry", "Store"]


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
        """Append entries durably (committed before returning); return their ids in order."""
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
