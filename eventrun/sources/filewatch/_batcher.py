"""Batching and delivery for the ``filewatch`` source.

Outputs queue up in emission order. :meth:`Batcher.flush` delivers every full batch
(``batch_size`` records, and at most 1 MB of JSON) at once; an incomplete last batch
waits until its oldest record is ``maximum_batching_window`` old (0: never waits). Each
batch is one ``ctx.invoke_async({"Records": [...]})``; only after it returned are its
versions moved into the cursor, whose changed buckets are written once per flush. When
the queue refuses a batch (the store is down, or the function's queue is full:
``QueueFull``) the batch stays first in line and is offered again after a backoff
(0.5 s doubling to 30 s, ``filewatch.deliver_failed``): nothing is lost and the watcher
keeps running.
Outputs without a record (a kind the trigger does not fire for) only update the cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from eventrun.abc import SourceContext
from eventrun.exceptions import EventrunError
from eventrun.sources.filewatch._cursor import Cursor
from eventrun.sources.filewatch._events import split_batches
from eventrun.sources.filewatch._tracker import Output, Tracker

__all__ = ["Batcher"]

log = structlog.get_logger("eventrun.sources.filewatch")

RETRY_FIRST_S = 0.5
RETRY_CAP_S = 30.0


class Batcher:
    def __init__(
        self,
        ctx: SourceContext,
        tracker: Tracker,
        cursor: Cursor,
        *,
        batch_size: int,
        window: float,
    ) -> None:
        self.ctx = ctx
        self.name = ctx.spec.name
        self.tracker = tracker
        self.cursor = cursor
        self.batch_size = batch_size
        self.window = window
        self._queue: list[Output] = []
        self._retry_at: float | None = None  # monotonic; set while the queue refuses
        self._retry_s = RETRY_FIRST_S

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, outputs: Iterable[Output]) -> None:
        self._queue.extend(outputs)

    def deadline(self) -> float | None:
        """When the waiting incomplete batch is due (monotonic), or None."""
        if not self._queue:
            return None
        due = self._queue[0].at + self.window
        return due if self._retry_at is None else max(due, self._retry_at)

    async def flush(self, now: float) -> None:
        silent = [o for o in self._queue if o.record is None]
        if silent:
            self.tracker.delivered(silent)
        self._queue = [o for o in self._queue if o.record is not None]
        deadline = self.deadline()
        window_over = deadline is None or now >= deadline
        batches = split_batches(self._queue, _record_of, self.batch_size)
        if batches and not window_over and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self._retry_at is not None and now < self._retry_at:
            batches = []
        for batch in batches:
            try:
                await self._deliver(batch)
            except EventrunError as exc:
                if not exc.retryable:
                    raise
                self._refused(exc, now, len(batch))
                break
            self._retry_at, self._retry_s = None, RETRY_FIRST_S
            del self._queue[: len(batch)]
        if self.cursor.dirty:
            await self.cursor.flush()

    def _refused(self, exc: EventrunError, now: float, size: int) -> None:
        log.warning(
            "filewatch.deliver_failed",
            trigger=self.name,
            count=size,
            error=str(exc),
            retry_in_s=self._retry_s,
        )
        self._retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_CAP_S)

    async def _deliver(self, batch: list[Output]) -> None:
        request_id = await self.ctx.invoke_async({"Records": [_record_of(o) for o in batch]})
        self.tracker.delivered(batch)
        created = sum(1 for o in batch if o.entry is not None)
        log.info(
            "filewatch.fired",
            trigger=self.name,
            count=len(batch),
            batch_size=self.batch_size,
            created=created,
            removed=len(batch) - created,
            request_id=request_id,
        )


def _record_of(o: Output) -> dict[str, Any]:
    assert o.record is not None
    return o.record
