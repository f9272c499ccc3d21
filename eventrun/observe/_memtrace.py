"""Memory growth by traceback, for soaks: ``EVENTRUN_TRACEMALLOC=SECONDS``.

With the variable set, the daemon starts :mod:`tracemalloc` (``EVENTRUN_TRACEMALLOC_FRAMES``
frames a traceback, default 8) once it serves, takes a baseline snapshot, then one every
``SECONDS``, and reports each against the baseline: the Python memory traced, the
process's RSS, the memory SQLite holds (``sqlite_mib``: C allocations tracemalloc cannot
see), and the ``EVENTRUN_TRACEMALLOC_TOP`` (default 15) tracebacks whose memory grew
most. Cyclic garbage is not a leak, so each snapshot follows a full ``gc.collect()``;
the report also gives the types of the garbage that collection found (``gc_garbage``:
cycles waiting for the collector) and the collector's counts (``gc``). Each report is a
``memtrace.snapshot`` log event and, with ``EVENTRUN_TRACEMALLOC_FILE`` set, one JSON line
appended there (``bench/soak.py`` reads it). A leak shows as a traceback whose size keeps
growing; allocator fragmentation as RSS growing while the traced total stays flat.

tracemalloc slows every allocation (about 2x with 8 frames): a diagnostic, off by default.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import anyio
import structlog
from anyio.abc import TaskStatus

__all__ = ["MemTrace"]

log = structlog.get_logger("eventrun.memtrace")

_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
    tracemalloc.Filter(False, __file__),  # the reports themselves
)


@functools.cache
def _sqlite_memory_used() -> Callable[[], int] | None:
    """``sqlite3_memory_used`` of the library the stdlib module uses (looked up once: a
    ctypes library is a cycle of objects, garbage the reports would count)."""
    try:
        import _sqlite3
        import ctypes

        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    return cast("Callable[[], int]", used)


def _sqlite_mib() -> float | None:
    """Memory SQLite holds in this process (page caches, statements: C allocations that
    tracemalloc cannot see); None where unavailable."""
    used = _sqlite_memory_used()
    return None if used is None else round(used() / 2**20, 3)


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class MemTrace:
    """Periodic tracemalloc snapshots compared with the first one."""

    interval_s: float
    frames: int = 8
    top: int = 15
    path: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MemTrace | None:
        """The watcher ``EVENTRUN_TRACEMALLOC*`` asks for, or None when unset or 0."""
        env = os.environ if environ is None else environ
        raw = env.get("EVENTRUN_TRACEMALLOC", "").strip()
        if not raw or float(raw) <= 0:
            return None
        return cls(
            interval_s=float(raw),
            frames=int(env.get("EVENTRUN_TRACEMALLOC_FRAMES") or 8),
            top=int(env.get("EVENTRUN_TRACEMALLOC_TOP") or 15),
            path=env.get("EVENTRUN_TRACEMALLOC_FILE") or None,
        )

    def _snapshot(self) -> tuple[tracemalloc.Snapshot, dict[str, Any]]:
        counts = [g["collections"] for g in gc.get_stats()]
        # what the cyclic garbage is made of: keep it for a look, then free it
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            unreachable = gc.collect()
            kinds = Counter(type(o).__qualname__ for o in gc.garbage).most_common(8)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        gc.collect()
        info = {
            "gc_garbage": dict(kinds),
            "gc": {
                "unreachable": unreachable,
                "collections_before": counts,
                "collections": [g["collections"] for g in gc.get_stats()],
                "frozen": gc.get_freeze_count(),
            },
        }
        return tracemalloc.take_snapshot().filter_traces(_IGNORED), info

    def _growth(
        self, older: tracemalloc.Snapshot, newer: tracemalloc.Snapshot
    ) -> tuple[int, list[dict[str, Any]]]:
        stats = newer.compare_to(older, "traceback")
        return (
            sum(s.size_diff for s in stats),
            [
                {
                    "size_diff_kib": round(s.size_diff / 1024, 1),
                    "count_diff": s.count_diff,
                    "size_kib": round(s.size / 1024, 1),
                    "traceback": [f"{f.filename}:{f.lineno}" for f in s.traceback],  # oldest first
                }
                for s in stats[: self.top]
            ],
        )

    def report(
        self,
        baseline: tracemalloc.Snapshot,
        previous: tracemalloc.Snapshot,
        snapshot: tracemalloc.Snapshot,
        started: float,
        info: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The growth since ``baseline`` (``top``) and since ``previous`` (``top_since_last``)
        by traceback, largest first."""
        total, growth = self._growth(baseline, snapshot)
        _, recent = self._growth(previous, snapshot)
        # the snapshot's own traces (it is traced too) count in get_traced_memory(): the
        # total is the filtered snapshot's
        traced = sum(trace.size for trace in snapshot.traces)
        peak = tracemalloc.get_traced_memory()[1]
        return {
            "event": "memtrace.snapshot",
            "t_s": round(time.monotonic() - started, 1),
            "rss_mib": round(_rss_mib(), 2),
            "sqlite_mib": _sqlite_mib(),
            "traced_mib": round(traced / 2**20, 3),
            "traced_peak_mib": round(peak / 2**20, 3),
            "tracemalloc_own_mib": round(tracemalloc.get_tracemalloc_memory() / 2**20, 3),
            "traced_diff_kib": round(total / 1024, 1),
            **(info or {}),
            "top": growth,
            "top_since_last": recent,
        }

    def _emit(self, line: dict[str, Any]) -> None:
        log.info(
            "memtrace.snapshot",
            t_s=line["t_s"],
            rss_mib=line["rss_mib"],
            traced_mib=line["traced_mib"],
            traced_diff_kib=line["traced_diff_kib"],
            top=line["top"][:5],
        )
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Trace until cancelled; stops tracemalloc when it started it."""
        started_here = not tracemalloc.is_tracing()
        if started_here:
            tracemalloc.start(self.frames)
        started = time.monotonic()
        try:
            baseline, info = await anyio.to_thread.run_sync(self._snapshot)
            previous = baseline
            self._emit(self.report(baseline, baseline, baseline, started, info))
            task_status.started()
            while True:
                await anyio.sleep(self.interval_s)
                snapshot, info = await anyio.to_thread.run_sync(self._snapshot)
                line = await anyio.to_thread.run_sync(
                    self.report, baseline, previous, snapshot, started, info
                )
                previous = snapshot
                self._emit(line)
        finally:
            if started_here:
                tracemalloc.stop()
