"""Cached store queue depths for ``/metrics`` and ``/status`` (no store I/O while serving).

A background task (:meth:`QueueDepths.run`, started by the runtime) reads the depth of every
``async:FUNCTION`` queue and every ``local:`` queue every few seconds. Scrapes and status
requests read the cache only, so a slow or unreachable store never slows them down; a
failed refresh keeps the last values and is logged once per failure streak.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import anyio
import structlog
from anyio.abc import TaskStatus

from eventrun.exceptions import StoreError
from eventrun.store import Store

__all__ = ["QueueDepths"]

log = structlog.get_logger("eventrun.depths")


class QueueDepths:
    """Depths of the async and ``local:`` queues, as of :attr:`refreshed_at`."""

    def __init__(self, functions: Iterable[str] = (), local: Iterable[str] = ()) -> None:
        self.functions = list(functions)
        self.asynchronous: dict[str, int] = dict.fromkeys(self.functions, 0)
        """function -> entries in ``async:FUNCTION``."""
        self.local: dict[str, int] = dict.fromkeys(local, 0)
        """``local:NAME`` -> entries. A queue once seen stays listed (at 0 when drained)."""
        self.refreshed_at: float | None = None
        """Epoch seconds of the last successful refresh (None: never)."""

    def async_depth(self, function: str) -> int:
        return self.asynchronous.get(function, 0)

    def watch(self, functions: Iterable[str], local: Iterable[str]) -> None:
        """Report these functions' async queues and these ``local:`` queues even when empty."""
        for name in functions:
            if name not in self.functions:
                self.functions.append(name)
            self.asynchronous.setdefault(name, 0)
        for queue in local:
            self.local.setdefault(queue, 0)

    async def refresh(self, store: Store, now: float) -> None:
        """Read every depth from the store (may raise StoreError; the cache is then kept)."""
        asynchronous = {name: await store.depth(f"async:{name}") for name in self.functions}
        names = set(self.local) | {q for q in await store.queues() if q.startswith("local:")}
        local = {queue: await store.depth(queue) for queue in sorted(names)}
        self.asynchronous, self.local = asynchronous, local
        self.refreshed_at = now

    async def run(
        self,
        store: Store,
        *,
        interval_s: float = 2.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh every ``interval_s`` until cancelled."""
        failing = False
        task_status.started()
        while True:
            try:
                await self.refresh(store, time.time())
                failing = False
            except StoreError as exc:
                if not failing:
                    log.warning("depths.refresh_failed", error=str(exc))
                failing = True
            await anyio.sleep(interval_s)
