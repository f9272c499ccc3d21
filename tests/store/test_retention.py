"""eventrun.store._retention: the DLQ sweep loop against a store that fails and recovers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from structlog.testing import capture_logs

from eventrun.store._retention import DlqRetention
from eventrun.store._sqlite import SqliteStore
from eventrun.testing import FakeClock

INTERVAL_S = 0.01


def _rename(path: Path, old: str, new: str) -> None:
    """Break (or mend) the store's file from outside, as an operator's mistake would."""
    conn = sqlite3.connect(path)
    conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.commit()
    conn.close()


async def _until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - the sweep loop signals nothing else
            await anyio.sleep(INTERVAL_S)


async def test_a_failing_sweep_is_logged_once_per_streak_and_retried(tmp_path: Path) -> None:
    clock = FakeClock(start=1_000_000.0)
    path = tmp_path / "s.db"
    async with SqliteStore(path, clock=clock) as store:
        await store.put("local:a", [b"old"])
        await clock.advance(7200)
        retention = DlqRetention(clock, max_age_s=3600, max_depth=None)

        def failures(logs: list[dict[str, Any]]) -> int:
            return len([e for e in logs if e["event"] == "dlq.sweep_failed"])

        _rename(path, "queue_stats", "stats_away")
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(partial(retention.run, store, interval_s=INTERVAL_S))
                await _until(lambda: failures(logs) == 1)
                await anyio.sleep(10 * INTERVAL_S)  # ten more failing sweeps: still one line
                assert failures(logs) == 1
                _rename(path, "stats_away", "queue_stats")
                await _until(lambda: retention.expired == {"local:a": 1})  # retried, recovered
                _rename(path, "queue_stats", "stats_away")
                await _until(lambda: failures(logs) == 2)  # a new streak is logged again
                tg.cancel_scope.cancel()
    failed = [e for e in logs if e["event"] == "dlq.sweep_failed"]
    assert all("no such table" in e["error"] and e["log_level"] == "warning" for e in failed)
