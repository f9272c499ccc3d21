"""Gap-aware acknowledgement for ordered sources.

Records of a shard complete out of order when the shard is split into parallel lanes, but a
broker position (Kafka offset, stream entry) may only move past a record once every record
before it completed. :class:`AckTracker` hands back exactly the contiguous completed prefix
of each shard, so a failed middle record is never acknowledged past.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from eventrun.abc import Record

__all__ = ["AckTracker", "Pending"]


class Pending(msgspec.Struct, eq=False):
    """A record the dispatcher holds, with its completion flag (a struct: one per
    record, built and freed in a fraction of a plain class's time)."""

    record: Record
    shard_queue: deque[Pending] | None
    arrived: float = 0.0
    done: bool = False


class AckTracker:
    """Per-shard queues of pending records in arrival order."""

    def __init__(self) -> None:
        self._shards: dict[str, deque[Pending]] = {}

    def register(self, record: Record, arrived: float = 0.0) -> Pending:
        queue = self._shards.get(record.shard)
        if queue is None:
            queue = self._shards[record.shard] = deque()
        pending = Pending(record, queue, arrived)
        queue.append(pending)
        return pending

    def register_all(self, records: Iterable[Record], arrived: float = 0.0) -> list[Pending]:
        """:meth:`register` for a poll's records (a shard's records usually come in a
        run: its queue is looked up once per run)."""
        out: list[Pending] = []
        append = out.append
        shards = self._shards
        shard: str | None = None
        queue: deque[Pending] | None = None
        for record in records:
            if record.shard != shard or queue is None:
                shard = record.shard
                queue = shards.get(shard)
                if queue is None:
                    queue = shards[shard] = deque()
            pending = Pending(record, queue, arrived)
            queue.append(pending)
            append(pending)
        return out

    def complete(self, items: Iterable[Pending]) -> list[Record]:
        """Mark ``items`` done; return the records that became acknowledgeable, in shard
        order (the newly contiguous completed prefix of every shard touched)."""
        touched: list[deque[Pending]] = []
        last: deque[Pending] | None = None
        for item in items:
            item.done = True
            queue = item.shard_queue
            # a batch is usually one shard's: compare with the last queue seen first (by
            # identity: deques compare equal by content)
            if queue is not last and queue is not None:
                last = queue
                if not any(queue is t for t in touched):
                    touched.append(queue)
        ready: list[Record] = []
        for queue in touched:
            while queue and queue[0].done:
                ready.append(queue.popleft().record)
        return ready

    def forget_shard(self, shard: str) -> list[Pending]:
        """Drop a shard (its partition was revoked); return what was still pending."""
        queue = self._shards.pop(shard, None)
        return [p for p in queue if not p.done] if queue else []

    def pending_count(self) -> int:
        return sum(len(q) for q in self._shards.values())
