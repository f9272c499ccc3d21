"""SqliteStore: what an operation costs must not grow with the depth of the queues.

Counted in SQLite virtual-machine steps (a progress handler called on every step), not
timed: a query that scans a queue's entries costs several steps per entry, so the same
operation on a queue 100 times deeper costs hundreds more steps; one that reads a
counter or walks an index to a bounded number of rows costs the same (give or take the
extra level of a deeper b-tree). bench/curve_store.py shows the same in operations/s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eventrun.store import QueueLimits, dlq
from eventrun.store import _sqlite as sqlite_module
from eventrun.store._sqlite import SqliteStore

SHALLOW, DEEP = 20, 4000
SLACK = 200
"""Steps a deeper b-tree may add; a scan of DEEP entries adds more than 10 times as many."""


class Steps:
    """Counts VM steps on one connection while ``counting`` is set."""

    def __init__(self) -> None:
        self.count = 0
        self.counting = False

    def attach(self, conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(self._step, 1)

    def _step(self) -> int:
        if self.counting:
            self.count += 1
        return 0

    async def of(self, call: Callable[[], Awaitable[Any]]) -> int:
        self.count, self.counting = 0, True
        try:
            await call()
        finally:
            self.counting = False
        return self.count


async def _filled(path: Path, depth: int) -> None:
    async with SqliteStore(path, limits=QueueLimits(max_depth=10**6)) as store:
        for start in range(0, depth, 1000):
            n = min(1000, depth - start)
            await store.put("async:f", [b"e" * 50] * n)
            await store.put("local:f-failed", [b'{"payload": {"n": 1}}'] * n)


async def _costs(path: Path, depth: int) -> dict[str, int]:
    await _filled(path, depth)
    steps = Steps()
    async with SqliteStore(path) as store:
        assert store._conn is not None
        steps.attach(store._conn)
        costs = {
            "depth": await steps.of(lambda: store.depth("async:f")),
            "queues": await steps.of(store.queues),
            "dlq list": await steps.of(lambda: dlq.list_page(store, "local:f-failed", limit=10)),
            "dlq queues": await steps.of(lambda: dlq.list_queues(store)),
            "enqueue": await steps.of(lambda: store.put("async:f", [b"one"])),
        }
        leased: list[str] = []

        async def lease() -> None:
            leased.extend(e.id for e in await store.lease("async:f", now=1e12, limit=1, lease_s=60))

        costs["lease"] = await steps.of(lease)
        costs["ack"] = await steps.of(lambda: store.ack("async:f", leased))
        assert await store.depth("async:f") == depth  # one put, one lease, one ack
        assert await store.queues() == ["async:f", "local:f-failed"]
    return costs


@pytest.mark.parametrize(
    "op", ["depth", "queues", "dlq list", "dlq queues", "enqueue", "lease", "ack"]
)
async def test_an_operation_costs_the_same_on_a_deep_queue(op: str, tmp_path: Path) -> None:
    shallow = await _costs(tmp_path / "shallow.db", SHALLOW)
    deep = await _costs(tmp_path / "deep.db", DEEP)
    assert deep[op] <= shallow[op] + SLACK, (op, shallow[op], deep[op])


async def test_opening_a_store_does_not_count_its_entries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters are filled from ``entries`` once (a file from before them); every later
    open costs the same however many entries the file holds."""
    opened: list[Steps] = []
    connect = sqlite3.connect

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        steps = Steps()
        steps.counting = True
        steps.attach(conn)
        opened.append(steps)
        return conn

    for name, depth in (("shallow.db", SHALLOW), ("deep.db", DEEP)):
        await _filled(tmp_path / name, depth)
    monkeypatch.setattr(sqlite_module.sqlite3, "connect", counting_connect)
    for name in ("shallow.db", "deep.db"):
        async with SqliteStore(tmp_path / name):
            pass
    shallow, deep = (steps.count for steps in opened)
    assert deep <= shallow + SLACK, (shallow, deep)


async def _lease_behind_delayed(path: Path, delayed: int) -> int:
    """Steps of one lease with ``delayed`` entries waiting (retries in backoff, leased
    ones) ahead of the ready one in queue order."""
    async with SqliteStore(path, limits=QueueLimits(max_depth=10**6)) as store:
        for start in range(0, delayed, 1000):
            n = min(1000, delayed - start)
            await store.put("async:f", [b"e" * 50] * n, available_at=2e12)
        await store.put("async:f", [b"ready"])
        assert store._conn is not None
        steps = Steps()
        steps.attach(store._conn)
        got: list[bytes] = []

        async def lease() -> None:
            leased = await store.lease("async:f", now=1e12, limit=1, lease_s=60)
            got.extend(e.payload for e in leased)

        cost = await steps.of(lease)
    assert got == [b"ready"]
    return cost


async def test_a_lease_costs_the_same_behind_many_waiting_entries(tmp_path: Path) -> None:
    """Regression (bench/curve_store.py): lease walked the queue in order past every entry
    not yet available; lease + ack fell from 5,565/s to 90/s behind 10^5 waiting ones."""
    shallow = await _lease_behind_delayed(tmp_path / "shallow.db", SHALLOW)
    deep = await _lease_behind_delayed(tmp_path / "deep.db", DEEP)
    assert deep <= shallow + SLACK, (shallow, deep)
