"""The dispatcher's lanes: where held records wait for a lane loop to batch them.

:class:`Lane` is a FIFO: one lane loop per shard (order per shard) or several loops sharing
one (queues). :class:`KeyedLane` serves a shard split by ``parallelization_factor``: several
lane loops share it and each record key belongs to at most one running batch at a time, so
order holds per key while any free loop takes any waiting key. A static split by
``hash(key) % factor`` would tie each loop to a fixed slice of the keys, and the busiest
slice (about 1.5x the mean with a thousand keys over forty lanes) would bound throughput;
here a loop is never idle while some key it may take has records waiting.
"""

from __future__ import annotations

import heapq
from collections import deque
from operator import attrgetter

import anyio

from eventrun.dispatch._acks import Pending

__all__ = ["KeyedLane", "Lane"]

_size = attrgetter("record.size")


class Lane:
    """Records waiting in arrival order."""

    __slots__ = ("items", "payload", "wake")

    def __init__(self) -> None:
        self.items: deque[Pending] = deque()
        self.payload = 0  # bytes of the waiting records (sizes as counted by the limit)
        self.wake = anyio.Event()

    def notify(self) -> None:
        self.wake.set()

    def put(self, pending: Pending) -> None:
        self.items.append(pending)
        self.payload += pending.record.size

    def put_all(self, pendings: list[Pending]) -> None:
        """:meth:`put` each of ``pendings``, in order."""
        self.items.extend(pendings)
        self.payload += sum(map(_size, pendings))

    def available(self) -> int:
        """Records a lane loop could take now."""
        return len(self.items)

    def first_arrived(self) -> float:
        return self.items[0].arrived

    def take(self, count: int, max_bytes: int) -> list[Pending]:
        """Up to ``count`` records, and no more than ``max_bytes`` of payload unless a
        single record is larger (it then goes alone, to fail as too large)."""
        items = self.items
        if self.payload <= max_bytes:  # all that waits fits: take by count alone
            popleft = items.popleft
            batch = [popleft() for _ in range(min(count, len(items)))]
            self.payload = self.payload - sum(map(_size, batch)) if items else 0
            return batch
        batch = []
        payload = 0
        while items and len(batch) < count:
            size = items[0].record.size
            if batch and payload + size > max_bytes:
                break
            batch.append(items.popleft())
            payload += size
        self.payload -= payload
        return batch

    def finished(self, batch: list[Pending]) -> None:
        """``batch`` (taken from this lane) is settled or given up."""

    def remove_shards(self, shards: set[str]) -> list[Pending]:
        """Remove and return the waiting records of ``shards``, in order."""
        removed = [p for p in self.items if p.record.shard in shards]
        if removed:
            self.items = deque(p for p in self.items if p.record.shard not in shards)
            self.payload -= sum(map(_size, removed))
        return removed

    def drain(self) -> list[Pending]:
        """Remove and return every waiting record."""
        items = list(self.items)
        self.items.clear()
        self.payload = 0
        return items


class KeyedLane(Lane):
    """Records of one shard, batched so that a key is in at most one running batch.

    ``waiting`` holds each key's records in arrival order; ``ready`` is a heap of
    ``(oldest waiting seq, key)`` over the keys no running batch owns. :meth:`take` hands
    out the oldest records of those keys in arrival order (a k-way merge), so a batch is
    the shard's next records minus the keys that are busy: no key starves, and the
    completed prefix the shard's acknowledgement waits on stays short. It claims every
    key it took from; :meth:`finished` frees them. Heap entries are dropped lazily: one
    is stale once its key is claimed or its oldest record is no longer ``seq``.
    """

    __slots__ = ("_claimed", "_count", "_ready", "_seq", "_waiting")

    def __init__(self) -> None:
        super().__init__()
        self._waiting: dict[str | None, deque[tuple[int, Pending]]] = {}
        self._ready: list[tuple[int, str | None]] = []
        self._claimed: set[str | None] = set()
        self._count = 0  # waiting records of unclaimed keys
        self._seq = 0

    def put(self, pending: Pending) -> None:
        key = pending.record.key or None
        self._seq += 1
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = deque()
            if key not in self._claimed:
                heapq.heappush(self._ready, (self._seq, key))
        queue.append((self._seq, pending))
        if key not in self._claimed:
            self._count += 1

    def put_all(self, pendings: list[Pending]) -> None:
        for pending in pendings:
            self.put(pending)

    def available(self) -> int:
        return self._count

    def _valid(self, seq: int, key: str | None, mine: set[str | None]) -> bool:
        if key in self._claimed and key not in mine:
            return False
        queue = self._waiting.get(key)
        return queue is not None and bool(queue) and queue[0][0] == seq

    def first_arrived(self) -> float:
        ready = self._ready
        while not self._valid(*ready[0], set()):
            heapq.heappop(ready)
        return self._waiting[ready[0][1]][0][1].arrived

    def take(self, count: int, max_bytes: int) -> list[Pending]:
        batch: list[Pending] = []
        mine: set[str | None] = set()
        payload = 0
        ready = self._ready
        while ready and len(batch) < count:
            seq, key = ready[0]
            if not self._valid(seq, key, mine):
                heapq.heappop(ready)
                continue
            queue = self._waiting[key]
            pending = queue[0][1]
            size = pending.record.size
            if batch and payload + size > max_bytes:
                break
            queue.popleft()
            batch.append(pending)
            payload += size
            mine.add(key)
            if queue:
                heapq.heapreplace(ready, (queue[0][0], key))
            else:
                heapq.heappop(ready)
                del self._waiting[key]
        self._count -= len(batch)
        for key in mine:
            self._claimed.add(key)
            rest = self._waiting.get(key)
            if rest:
                self._count -= len(rest)  # wait for this batch (heap entry now stale)
        return batch

    def finished(self, batch: list[Pending]) -> None:
        freed = False
        for p in batch:
            key = p.record.key or None
            if key in self._claimed:
                self._claimed.discard(key)
                queue = self._waiting.get(key)
                if queue:
                    heapq.heappush(self._ready, (queue[0][0], key))
                    self._count += len(queue)
                    freed = True
        if freed:
            self.notify()

    def drain(self) -> list[Pending]:
        items = sorted((entry for q in self._waiting.values() for entry in q), key=_seq_of)
        self._waiting.clear()
        self._ready.clear()
        self._count = 0
        return [p for _, p in items]


def _seq_of(entry: tuple[int, Pending]) -> int:
    return entry[0]
