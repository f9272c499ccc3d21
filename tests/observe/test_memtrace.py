"""EVENTRUN_TRACEMALLOC: periodic snapshots name the traceback that grows."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from eventrun.observe import MemTrace


def test_from_env() -> None:
    assert MemTrace.from_env({}) is None
    assert MemTrace.from_env({"EVENTRUN_TRACEMALLOC": "0"}) is None
    trace = MemTrace.from_env(
        {
            "EVENTRUN_TRACEMALLOC": "600",
            "EVENTRUN_TRACEMALLOC_FRAMES": "4",
            "EVENTRUN_TRACEMALLOC_FILE": "/tmp/x.jsonl",
        }
    )
    assert trace == MemTrace(interval_s=600.0, frames=4, top=15, path="/tmp/x.jsonl")


_hoard: list[bytes] = []


def _grow() -> None:
    _hoard.extend(b"%d" % i * 200 for i in range(2000))  # ~400 KiB


@pytest.fixture
def tracemalloc_off() -> Iterator[None]:
    """The watcher starts and stops tracemalloc itself: one started by PYTHONTRACEMALLOC
    is stopped for the test and started again after it."""
    frames = tracemalloc.get_traceback_limit()
    was = tracemalloc.is_tracing()
    tracemalloc.stop()
    try:
        yield
    finally:
        if was:
            tracemalloc.start(frames)


@pytest.mark.usefixtures("tracemalloc_off")
async def test_snapshots_name_the_growing_traceback(tmp_path: Path) -> None:
    path = tmp_path / "memtrace.jsonl"
    trace = MemTrace(interval_s=0.2, frames=4, top=5, path=str(path))

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async with anyio.create_task_group() as tg:
        await tg.start(trace.run)
        _grow()
        with anyio.fail_after(10):
            while len(lines()) < 2:  # noqa: ASYNC110 (a line in a file: no event to wait on)
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert not tracemalloc.is_tracing(), "stopped when the watcher ends"
    baseline, report = lines()[:2]
    assert baseline["traced_diff_kib"] == 0
    assert isinstance(baseline["sqlite_mib"], float)  # the stdlib module's library
    top = report["top"]
    assert isinstance(top, list)
    grower = top[0]
    assert any("test_memtrace.py" in frame for frame in grower["traceback"]), grower
    assert grower["size_diff_kib"] > 300
    assert report["traced_diff_kib"] > 300  # type: ignore[operator]
    assert report["top_since_last"][0]["traceback"] == grower["traceback"]  # type: ignore[index]
    _hoard.clear()
