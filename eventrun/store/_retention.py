"""DLQ retention: a periodic sweep that deletes old entries of the ``local:`` queues.

``store.dlq_retention`` (default 14 days, SQS's longest retention) is the age past which
an entry of a ``local:`` queue (DLQs, ``local:`` destinations, undeliverable messages) is
deleted; ``store.dlq_max_depth``, when set, also deletes the oldest entries beyond that
many. ``async:`` queues are not swept: their entries age out through
``maximum_event_age`` into a destination instead. The runtime runs :meth:`run` in its
task group; each sweep is one :meth:`eventrun.store.Store.trim` per non-empty ``local:``
queue, which walks a time index (SQLite) or a ZSET by time (Redis), so it costs what it
deletes, not what the queues hold. Deletions are counted per queue
(``eventrun_dlq_expired_total``) and logged as ``dlq.expired``.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import TaskStatus

from eventrun.abc import Clock
from eventrun.exceptions import StoreError
from eventrun.store._base import Store

__all__ = ["SWEEP_INTERVAL_S", "DlqRetention"]

log = structlog.get_logger("eventrun.retention")

SWEEP_INTERVAL_S = 60.0


class DlqRetention:
    """Deletes ``local:`` queue entries older than ``max_age_s`` (None or -1: no age
    limit) and beyond ``max_depth`` entries (None: no depth limit)."""

    def __init__(self, clock: Clock, *, max_age_s: float | None, max_depth: int | None) -> None:
        self._clock = clock
        self.max_age_s = None if max_age_s is None or max_age_s < 0 else max_age_s
        self.max_depth = max_depth
        self.expired: dict[str, int] = {}
        """``local:NAME`` -> entries deleted by the sweep since start."""

    @property
    def enabled(self) -> bool:
        return self.max_age_s is not None or self.max_depth is not None

    async def sweep(self, store: Store) -> int:
        """One pass over every non-empty ``local:`` queue; returns the entries deleted."""
        before = 0.0 if self.max_age_s is None else self._clock.time() - self.max_age_s
        total = 0
        for queue in await store.queues():
            if not queue.startswith("local:"):
                continue
            removed = await store.trim(queue, enqueued_before=before, keep=self.max_depth)
            if removed:
                total += removed
                self.expired[queue] = self.expired.get(queue, 0) + removed
                log.info(
                    "dlq.expired",
                    queue=queue,
                    count=removed,
                    retention_s=self.max_age_s,
                    max_depth=self.max_depth,
                )
        return total

    async def run(
        self,
        store: Store,
        *,
        interval_s: float = SWEEP_INTERVAL_S,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep now and then every ``interval_s`` until cancelled; a failing store is
        logged once per failure streak and tried again next time."""
        task_status.started()
        failing = False
        while True:
            try:
                await self.sweep(store)
                failing = False
            except StoreError as exc:
                if not failing:
                    log.warning("dlq.sweep_failed", error=str(exc))
                failing = True
            await anyio.sleep(interval_s)
