"""Helpers for driving the real dispatcher in tests: a handler seam and a run harness."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from eventrun.abc import Poller
from eventrun.dispatch._backoff import Backoff
from eventrun.dispatch._dispatcher import DispatchSettings, Publisher, TriggerDispatcher
from eventrun.testing import FakeClock, MemoryQueue, MemoryStream

FAST = Backoff(base_s=0.001, cap_s=0.002, jitter=0.0)


@dataclass(slots=True)
class Result:
    request_id: str
    ok: bool
    payload: bytes
    error_type: str | None = None


@dataclass
class Handler:
    """Plays the function: decodes each batch event, calls ``fn(records) -> return value``.

    ``fn`` raising makes the invocation fail with Lambda's error JSON. Every invocation's
    decoded records are kept in ``calls``.
    """

    fn: Callable[[list[dict[str, Any]]], Any] = lambda records: None
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    _called: anyio.Event = field(default_factory=anyio.Event)

    async def wait_calls(self, count: int) -> None:
        """Wait until the function was invoked at least ``count`` times."""
        while len(self.calls) < count:
            self._called = anyio.Event()
            await self._called.wait()

    async def __call__(self, payload: bytes) -> Result:
        event = json.loads(payload)
        records = event["Records"]
        self.calls.append(records)
        self._called.set()
        rid = f"req-{len(self.calls)}"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await anyio.sleep(self.delay_s)
            value = self.fn(records)
        except Exception as exc:
            err = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return Result(rid, False, json.dumps(err).encode(), type(exc).__name__)
        finally:
            self.in_flight -= 1
        return Result(rid, True, json.dumps(value).encode())


def data_of(record: dict[str, Any]) -> str:
    """The payload text of a memory-source record (stream ``data`` or queue ``body``)."""
    if "data" in record:
        return base64.b64decode(record["data"]).decode()
    return str(record["body"])


@asynccontextmanager
async def running(
    poller: Poller,
    handler: Handler,
    *,
    clock: FakeClock | None = None,
    on_failure: Publisher | None = None,
    on_success: Publisher | None = None,
    grace_s: float = 5.0,
    **settings: Any,
) -> AsyncIterator[TriggerDispatcher]:
    """Run a dispatcher for the duration of the block, then shut it down gracefully."""
    from eventrun.runtime._clock import SystemClock

    opts: dict[str, Any] = {"function": "fn", "trigger": "fn/test[0]", "backoff": FAST}
    opts.update(settings)
    dispatcher = TriggerDispatcher(
        poller,
        DispatchSettings(**opts),
        handler,
        clock=clock or SystemClock(),
        on_failure=on_failure,
        on_success=on_success,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        try:
            yield dispatcher
        finally:
            await dispatcher.shutdown(grace_s)


async def until(
    source: MemoryStream | MemoryQueue, predicate: Callable[[], bool], timeout_s: float = 20.0
) -> None:
    """Wait (on the source's settle events) until ``predicate()`` holds."""
    with anyio.fail_after(timeout_s):
        await source.wait_until(predicate)
