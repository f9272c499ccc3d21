"""A fake clock for deterministic tests of time-driven behaviour."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to.

    ``sleep_until`` parks the caller until :meth:`advance` moves monotonic time past its
    deadline. Wall time moves in step with monotonic time from ``start``, except when
    :meth:`jump_wall` moves it alone, as NTP or an operator setting the date does.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall0 = start
        self._now = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._parked = anyio.Event()

    def time(self) -> float:
        return self._wall0 + self._now

    def monotonic(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in :meth:`sleep_until` right now."""
        return len(self._sleepers)

    async def sleep_until(self, deadline: float) -> None:
        event = anyio.Event()
        cancel = self.wake_at(deadline, event)
        try:
            await event.wait()  # a checkpoint even when the deadline has passed
        finally:
            cancel()

    def wake_at(self, deadline: float, event: anyio.Event) -> Callable[[], None]:
        """Set ``event`` when :meth:`advance` passes ``deadline`` (counted in
        :attr:`sleepers` until then); returns a function that cancels it."""
        if deadline <= self._now:
            event.set()
            return lambda: None
        entry = (deadline, next(self._seq), event)
        heapq.heappush(self._sleepers, entry)
        self._parked.set()

        def cancel() -> None:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)

        return cancel

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline has passed, in order.

        Yields to the event loop after each wake-up so woken tasks run before time moves on.
        """
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
        self._now = target
        for _ in range(5):
            await anyio.lowlevel.checkpoint()

    def jump_wall(self, seconds: float) -> None:
        """Move wall time (``time()``) by ``seconds``, forward or back, leaving monotonic
        time and every sleeper where they are: a clock step, not time passing."""
        self._wall0 += seconds

    async def wait_for_sleepers(self, n: int = 1) -> None:
        """Wait (cooperatively) until at least ``n`` tasks sleep on this clock."""
        while len(self._sleepers) < n:
            self._parked = anyio.Event()
            await self._parked.wait()
