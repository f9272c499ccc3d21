"""Cached queue depths (eventrun/_depths.py) against a real redis store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from structlog.testing import capture_logs

from eventrun.observe._depths import QueueDepths
from eventrun.store._redis import RedisStore
from tests.fixtures.redis import RedisServer

INTERVAL_S = 0.05


class CountingStore(RedisStore):
    """The real redis store, counting depth reads so a test can wait for refresh rounds."""

    reads = 0

    async def depth(self, queue: str) -> int:
        self.reads += 1
        return await super().depth(queue)


async def wait_for(condition: Callable[[], bool], bound_s: float = 30) -> None:
    with anyio.fail_after(bound_s):
        while not condition():  # noqa: ASYNC110 - refresh rounds and log lines have no event
            await anyio.sleep(INTERVAL_S / 5)


async def test_store_outage_keeps_the_cache_and_logs_once_per_streak(
    redis_server: RedisServer, redis_url: str
) -> None:
    depths = QueueDepths(functions=["fn"])

    async def run(task_status: TaskStatus[None]) -> None:
        await depths.run(store, interval_s=INTERVAL_S, task_status=task_status)

    def failures() -> list[dict[str, Any]]:
        return [e for e in logs if e["event"] == "depths.refresh_failed"]

    async def outage() -> None:
        redis_server.stop()
        try:
            await wait_for(lambda: len(failures()) == streaks + 1)
            reads = store.reads
            await wait_for(lambda: store.reads >= reads + 3)  # three more failed rounds
            assert len(failures()) == streaks + 1
            assert (dict(depths.asynchronous), depths.refreshed_at) == cached
        finally:
            redis_server.start()

    async with CountingStore(redis_url, prefix="depths:") as store:
        await store.put("async:fn", [b"{}", b"{}"])
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(run)
                await wait_for(lambda: depths.refreshed_at is not None)
                assert depths.asynchronous == {"fn": 2}
                streaks = 0
                cached = dict(depths.asynchronous), depths.refreshed_at
                await outage()
                # recovery refreshes again (the restarted server is empty) ...
                await wait_for(lambda: depths.refreshed_at != cached[1])
                assert depths.asynchronous == {"fn": 0}
                # ... and ends the streak: the next outage is logged again
                streaks = 1
                cached = dict(depths.asynchronous), depths.refreshed_at
                await outage()
                tg.cancel_scope.cancel()
    assert "Redis store" in failures()[0]["error"]
