"""Batching and delivery for the ``filewatch`` source.

Outputs queue up in emission order. :meth:`Batcher.flush` delivers every full batch
(``batch_size`` records, and at most 1 MB of JSON) at once; an incomplete last batch
waits until its oldest record is ``maximum_batching_window`` old (0: never waits). Each
batch is one ``ctx.invoke_async({"Records": [...]})``; only after it returned are its
versions moved into the cursor, whose changed buckets are written once per flush.
Outputs without a record (a kind the trigger does not fire for) only update the cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from eventrun.abc import SourceContext
from eventrun.sources._filewatch_cursor import Cursor
from eventrun.sources._filewatch_events import split_batches
from eventrun.sources._filewatch_tracker import Output, Tracker

__all__ = ["Batcher"]

log = structlog.get_logger("eventrun.sources.filewatch")


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

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, outputs: Iterable[Output]) -> None:
        self._queue.extend(outputs)

    def deadline(self) -> float | None:
        """When the waiting incomplete batch is due (monotonic), or None."""
        if not self._queue:
            return None
        return self._queue[0].at + self.window

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
        for batch in batches:
            await self._deliver(batch)
            del self._queue[: len(batch)]
        if self.cursor.dirty:
            await self.cursor.flush()

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
