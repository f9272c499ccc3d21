"""The system clock's timer (what a dispatcher lane waits out its batching window with)."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

from eventrun.runtime._clock import SystemClock


async def test_wake_at_sets_the_event_once_the_deadline_passed() -> None:
    clock = SystemClock()
    event = anyio.Event()
    deadline = clock.monotonic() + 0.05
    clock.wake_at(deadline, event)
    assert not event.is_set()
    with anyio.fail_after(5):
        await event.wait()
    assert time.monotonic() >= deadline - 0.002  # the loop clock rounds to a millisecond


async def test_a_cancelled_wake_never_fires() -> None:
    clock = SystemClock()
    cancelled, later = anyio.Event(), anyio.Event()
    cancel = clock.wake_at(clock.monotonic() + 0.02, cancelled)
    clock.wake_at(clock.monotonic() + 0.1, later)
    cancel()
    with anyio.fail_after(5):
        await later.wait()
    assert not cancelled.is_set()


async def test_a_past_deadline_wakes_at_the_next_loop_turn() -> None:
    clock = SystemClock()
    for deadline in (clock.monotonic() - 1, clock.monotonic()):
        event = anyio.Event()
        clock.wake_at(deadline, event)
        assert not event.is_set()  # not synchronously: the caller finishes its turn first
        # this task resumes in the next loop turn, when the timer is due too (asyncio runs
        # the callbacks made ready before that turn's timers); one more turn sees it set
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        assert event.is_set()


async def test_sleep_until_a_past_deadline_returns_at_once_but_is_a_checkpoint() -> None:
    """A deadline already passed does not sleep, yet still yields: a loop that waits out
    deadlines in a row can be cancelled and lets other tasks run."""
    clock = SystemClock()
    started = time.monotonic()
    with anyio.fail_after(5):
        await clock.sleep_until(clock.monotonic() - 10)
    assert time.monotonic() - started < 1  # no sleep (a margin for a busy machine)
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep_until(clock.monotonic() - 1)
        reached = True
    assert scope.cancelled_caught
    assert not reached
