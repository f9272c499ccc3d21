"""An async handler; module-level state survives between invocations."""

from __future__ import annotations

import asyncio
import os

LOOPS: set[int] = set()


async def handler(event, context):
    await asyncio.sleep(0.001)
    LOOPS.add(id(asyncio.get_running_loop()))
    return {
        "async": True,
        "event": event,
        "pid": os.getpid(),
        "loops": len(LOOPS),
        "request_id": context.aws_request_id,
    }


async def fail(event, context):
    await asyncio.sleep(0)
    raise KeyError("missing")


async def sleepy(event, context):
    await asyncio.sleep(event["s"])
    return "woke"


async def immediate(event, context):
    return {"immediate": event}


async def immediate_fail(event, context):
    raise ValueError("before any await")


async def relay(event, context):
    """Awaits that return values and awaits that raise, across several suspensions."""
    loop = asyncio.get_running_loop()
    got = []
    future = loop.create_future()
    loop.call_soon(future.set_result, "from a future")
    got.append(await future)
    await asyncio.sleep(0)
    failing = loop.create_future()
    loop.call_soon(failing.set_exception, LookupError("thrown in"))
    try:
        await failing
    except LookupError as exc:
        got.append(f"caught {exc}")
    got.append(await asyncio.wait_for(asyncio.sleep(0.001, "slept"), 5))
    return got


async def stubborn(event, context):
    """Catches the first cancellation (the timeout) and returns late: still a timeout."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        raise


async def scoped(event, context):
    """Enters anyio cancel scopes and a task group before its first suspension."""
    import anyio

    with anyio.move_on_after(5):
        await anyio.sleep(0.001)
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0.001)
    with anyio.fail_after(5):
        await asyncio.sleep(0)
    return "scoped"


async def grouped_sleeper(event, context):
    """Opens a task group before its first suspension and outlives its timeout in it;
    the child's cancellation is recorded in the event's file."""
    import anyio

    async def child() -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            # no await allowed here (the task is being cancelled): a blocking write
            with open(event["marker"], "w") as f:  # noqa: ASYNC230
                f.write("child cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
        await anyio.sleep(10)


async def own_timeout(event, context):
    """Raises a TimeoutError of its own, well within its time: a handler error."""
    await asyncio.sleep(0)
    raise TimeoutError("upstream took too long")


async def swallower(event, context):
    """Swallows the timeout's cancellation and returns a value late: still a timeout."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "too late"


ORDER: list[str] = []
"""(tag) of every line the chatty handlers logged, in emission order across invocations."""
_ARRIVED: dict[str, int] = {}
_EVERYONE: dict[str, asyncio.Event] = {}


async def chatty(event, context):
    """Waits until ``event["together"]`` invocations of its group are running, then logs
    ``lines`` lines, yielding to the loop between them: concurrent runs interleave."""
    import logging

    group = event["group"]
    _ARRIVED[group] = _ARRIVED.get(group, 0) + 1
    everyone = _EVERYONE.setdefault(group, asyncio.Event())
    if _ARRIVED[group] >= event["together"]:
        everyone.set()
    await everyone.wait()
    log = logging.getLogger("tests.chatty")
    for i in range(event["lines"]):
        log.warning("%s line %d", event["tag"], i)
        ORDER.append(event["tag"])
        await asyncio.sleep(0)
    return context.aws_request_id


def chatty_sync(event, context):
    """The same from worker threads (a sync handler)."""
    import logging
    import threading
    import time

    barrier = _BARRIERS.setdefault(event["group"], threading.Barrier(event["together"]))
    barrier.wait(5)
    log = logging.getLogger("tests.chatty")
    for i in range(event["lines"]):
        log.warning("%s line %d", event["tag"], i)
        ORDER.append(event["tag"])
        time.sleep(0.001)
    return context.aws_request_id


_BARRIERS: dict[str, object] = {}


async def _later(event):
    await asyncio.sleep(0)
    return {"later": event}


async def returns_a_coroutine(event, context):
    """Returns without ever suspending, handing back an awaitable: it is awaited."""
    return _later(event)


def sync_returns_a_coroutine(event, context):
    """A plain function returning a coroutine (a decorator's doing): it is awaited."""
    return _later(event)
