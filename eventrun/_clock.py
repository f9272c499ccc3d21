"""The system clock: the one place the runtime reads time (see ``eventrun.abc.Clock``)."""

from __future__ import annotations

import time

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
