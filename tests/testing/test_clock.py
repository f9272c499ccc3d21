"""FakeClock: sleepers and timers move only when the test advances time."""

from __future__ import annotations

import anyio

from eventrun.testing import FakeClock


async def test_wake_at_fires_when_advance_passes_the_deadline() -> None:
    clock = FakeClock()
    event = anyio.Event()
    clock.wake_at(5.0, event)
    assert clock.sleepers == 1
    await clock.advance(4.9)
    assert not event.is_set()
    await clock.advance(0.2)
    assert event.is_set()
    assert clock.sleepers == 0


async def test_cancelled_wake_is_no_sleeper_and_never_fires() -> None:
    clock = FakeClock()
    event = anyio.Event()
    cancel = clock.wake_at(1.0, event)
    cancel()
    cancel()  # twice is harmless
    assert clock.sleepers == 0
    await clock.advance(2.0)
    assert not event.is_set()


async def test_wake_at_a_past_deadline_fires_at_once() -> None:
    clock = FakeClock()
    await clock.advance(3.0)
    event = anyio.Event()
    clock.wake_at(2.0, event)
    assert event.is_set()
    assert clock.sleepers == 0


async def test_timers_and_sleepers_wake_in_deadline_order() -> None:
    clock = FakeClock()
    order: list[str] = []
    timer = anyio.Event()
    clock.wake_at(2.0, timer)

    async def sleeper() -> None:
        await clock.sleep_until(1.0)
        order.append("sleeper")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.wait_for_sleepers(2)
        await clock.advance(1.5)
        assert order == ["sleeper"]
        assert not timer.is_set()
        await clock.advance(1.0)
        assert timer.is_set()
