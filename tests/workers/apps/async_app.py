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
