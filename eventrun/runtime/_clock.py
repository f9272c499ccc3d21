"""The system clock: the one place the runtime reads time (see ``eventrun.abc.Clock``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio

__all__ = ["SystemClock"]


class SystemClock:
    """Wall and monotonic time from the OS; sleeps with anyio."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()

    def wake_at(self, deadline: float, event: anyio.Event) -> Callable[[], None]:
        """A loop timer (the daemon runs on asyncio): about 2 us, where a task sleeping
        in a task group cost 30."""
        delay = max(0.0, deadline - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, event.set).cancel
