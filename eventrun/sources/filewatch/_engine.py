"""The running ``filewatch`` source: watcher thread, sweeps, batching, cursor writes.

Tasks (one anyio task group per ``serve``):

* the :class:`~eventrun.sources.filewatch._watcher.Watcher` runs watchfiles in a worker
  thread with a stop flag set when the group is cancelled. Reported paths are only
  *hints*: they go into a dirty set and the sweep looks at the file system itself. After
  a watcher failure or a replaced root it asks for a rescan (``filewatch.rescan``).
* ``_periodic`` requests a full rescan every ``rescan_interval_s``. The kernel's inotify
  queue can overflow (a burst beyond ``fs.inotify.max_queued_events``); watchfiles drops
  the "rescan needed" notice, so this sweep is what recovers those changes.
* ``_loop`` sweeps when woken or when a pending file or a batching window is due:
  observe dirty paths, rescan if asked, hash the files that are due, then let the
  :class:`~eventrun.sources.filewatch._batcher.Batcher` deliver and write the cursor.

Delivery is at least once: the cursor is written after ``invoke_async`` returned, so a
crash in between re-fires those files on the next start.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskStatus

from eventrun.abc import Clock, SourceContext
from eventrun.exceptions import ConfigError, SourceError
from eventrun.sources.filewatch import _scan as fs
from eventrun.sources.filewatch._batcher import Batcher
from eventrun.sources.filewatch._cursor import Cursor, Entry
from eventrun.sources.filewatch._events import RecordBuilder
from eventrun.sources.filewatch._tracker import Pending, Tracker
from eventrun.sources.filewatch._watcher import NotifyFactory, Watcher

__all__ = ["Engine", "Options"]

log = structlog.get_logger("eventrun.sources.filewatch")

MAX_DIRTY = 100_000
"""More distinct dirty paths than this between sweeps: drop them and rescan instead."""
SWEEP_TICK_S = 0.01
SHUTDOWN_FLUSH_S = 5.0
READ_RETRY_S = 5.0
"""A file that cannot be read (permissions) is tried again after this long."""
_REFUSED_MEMORY = 10_000


@dataclass(slots=True, frozen=True)
class Options:
    root: Path
    events: frozenset[str]
    settle: float
    batch_size: int
    window: float
    on_startup: str
    rescan_interval_s: float


class Engine:
    def __init__(
        self, options: Options, policy: fs.PathPolicy, ctx: SourceContext, factory: NotifyFactory
    ) -> None:
        self.o = options
        self.policy = policy
        self.ctx = ctx
        self.clock = ctx.clock
        self.name = ctx.spec.name
        self.watcher = Watcher(
            options.root,
            policy.recursive,
            factory,
            self.clock,
            self.name,
            on_paths=self._on_paths,
            on_rescan=self.request_rescan,
        )
        self.cursor = Cursor(ctx.state, self.name)
        builder = RecordBuilder(options.root.name, self.name)
        self.tracker = Tracker(
            self.cursor,
            builder,
            settle=options.settle,
            fire_created="created" in options.events,
            fire_removed="removed" in options.events,
        )
        self._dirty: set[str] = set()
        self._rescan: str | None = None
        self._wake = anyio.Event()
        self.batcher = Batcher(
            ctx, self.tracker, self.cursor, batch_size=options.batch_size, window=options.window
        )
        self._refused: set[str] = set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        await self.cursor.load()
        stop = threading.Event()
        try:
            await anyio.to_thread.run_sync(self.watcher.open)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"{self.name}: filewatch.path: must be an existing directory, got {self.o.root}"
            ) from exc
        except (OSError, RuntimeError) as exc:
            # ENOSPC here is the inotify watch limit (one watch per directory).
            raise SourceError(
                f"{self.name}: cannot watch {self.o.root}: {exc}; for large trees raise "
                "fs.inotify.max_user_watches or set recursive: false"
            ) from exc
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_set_when_cancelled, stop)
                await self._startup()
                tg.start_soon(self.watcher.run, stop)
                tg.start_soon(self._periodic)
                tg.start_soon(self._loop)
                task_status.started()
        finally:
            self.watcher.close()
            # Versions delivered in the sweep that was cancelled: record them, or a
            # restart would fire them again.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_FLUSH_S):
                await self.cursor.flush()

    def _on_paths(self, paths: set[str]) -> None:
        self._dirty |= paths
        if len(self._dirty) > MAX_DIRTY:
            self._dirty.clear()
            self.request_rescan("overflow")
        self._wake.set()

    def request_rescan(self, reason: str) -> None:
        # keep every reason asked for since the last sweep ("watch_failed+periodic")
        if self._rescan is None:
            self._rescan = reason
        elif reason not in self._rescan.split("+"):
            self._rescan = f"{self._rescan}+{reason}"
        self._wake.set()

    async def _periodic(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.monotonic() + self.o.rescan_interval_s)
            self.request_rescan("periodic")

    # -- sweeps ------------------------------------------------------------------------

    async def _startup(self) -> None:
        if self.o.on_startup == "existing":
            await self._full_scan("startup")
            return
        try:
            found = await anyio.to_thread.run_sync(fs.scan, self.policy)
        except FileNotFoundError:
            found = []
        present = {o.rel: o for o in found if isinstance(o, fs.File)}
        for rel in list(self.cursor):
            if rel not in present:
                self.cursor.drop(rel)
        for rel, obs in present.items():
            entry = self.cursor.get(rel)
            if entry is None or entry.stat != obs.stat:
                self.cursor.put(rel, Entry(obs.stat, ""))
        await self.cursor.flush()

    async def _full_scan(self, reason: str) -> None:
        started = self.clock.monotonic()
        try:
            found = await anyio.to_thread.run_sync(fs.scan, self.policy)
        except FileNotFoundError:
            log.warning("filewatch.root_missing", trigger=self.name, path=str(self.o.root))
            return
        before = len(self.batcher) + len(self.tracker.pending)
        now, wall = self.clock.monotonic(), self.clock.time()
        present: set[str] = set()
        for obs in found:
            if isinstance(obs, fs.File):
                present.add(obs.rel)
                self.tracker.file(obs, now, wall)
            elif isinstance(obs, fs.Refused):
                self._log_refused(obs)
        gone: list[str] = []
        for rel in self.tracker.known_paths() - present:
            if self.policy.in_depth(rel) and self.policy.wanted(rel):
                gone.append(rel)
            else:
                self.tracker.forget(rel)
        for rel in [r for r in self.tracker.pending if r not in present]:
            del self.tracker.pending[rel]
        self.batcher.add(self.tracker.missing(gone, now, wall))
        changed = len(self.batcher) + len(self.tracker.pending) - before
        level = log.debug if reason == "periodic" and not changed else log.info
        level(
            "filewatch.rescan",
            trigger=self.name,
            reason=reason,
            files=len(present),
            changed=changed,
            duration_s=round(self.clock.monotonic() - started, 6),
        )

    async def _loop(self) -> None:
        while True:
            await self._sleep(self._next_deadline())
            self._wake = anyio.Event()
            await self._sweep()

    def _next_deadline(self) -> float | None:
        if self._dirty or self._rescan:
            return self.clock.monotonic()
        due = self.tracker.next_due()
        if due is not None:  # files due within one tick are handled in one sweep
            due = math.ceil(due / SWEEP_TICK_S) * SWEEP_TICK_S
        deadlines = [d for d in (due, self.batcher.deadline()) if d is not None]
        return min(deadlines, default=None)

    async def _sleep(self, deadline: float | None) -> None:
        if deadline is not None and deadline <= self.clock.monotonic():
            await anyio.lowlevel.checkpoint()
            return
        async with anyio.create_task_group() as tg:
            if deadline is not None:
                tg.start_soon(_sleep_then_cancel, self.clock, deadline, tg.cancel_scope)
            await self._wake.wait()
            tg.cancel_scope.cancel()

    async def _sweep(self) -> None:
        if self._rescan is not None:
            reason, self._rescan = self._rescan, None
            await self._full_scan(reason)
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            found = await anyio.to_thread.run_sync(_observe_all, self.policy, dirty)
            self._apply(found)
        due = self.tracker.pop_due(self.clock.monotonic())
        if due:
            hashed = await anyio.to_thread.run_sync(_hash_all, due)
            self._settled(hashed)
        await self.batcher.flush(self.clock.monotonic())

    def _settled(self, hashed: list[tuple[Pending, str | fs.Stat | OSError]]) -> None:
        now, wall = self.clock.monotonic(), self.clock.time()
        for p, result in hashed:
            if isinstance(result, str):
                out = self.tracker.complete(p, result, now, wall)
                if out is not None:
                    self.batcher.add([out])
            elif isinstance(result, fs.Stat):  # written to meanwhile: a new quiet period
                self.tracker.pending[p.rel] = Pending(p.rel, p.real, result, now + self.o.settle)
            elif isinstance(result, FileNotFoundError):
                self._dirty.add(str(self.o.root / p.rel))
            else:
                log.warning(
                    "filewatch.read_failed", trigger=self.name, path=p.real, error=str(result)
                )
                retry = now + max(self.o.settle, READ_RETRY_S)
                self.tracker.pending[p.rel] = Pending(p.rel, p.real, p.stat, retry)

    def _apply(self, found: list[fs.Observation]) -> None:
        now, wall = self.clock.monotonic(), self.clock.time()
        missing: list[str] = []
        gone: dict[str, list[str]] = {}  # directory -> in-progress names that vanished
        for obs in found:  # in-progress names first, so a rename in the same sweep is seen
            if isinstance(obs, fs.Ignored) and obs.ino is not None:
                self.tracker.temp_seen(obs.ino)
            elif isinstance(obs, fs.Missing) and obs.in_progress:
                directory, _, name = obs.rel.rpartition("/")
                gone.setdefault(directory, []).append(name)
        for obs in found:
            if isinstance(obs, fs.File):
                directory, _, name = obs.rel.rpartition("/")
                renamed = any(name in temp for temp in gone.get(directory, ()))
                self.tracker.file(obs, now, wall, renamed=renamed)
            elif isinstance(obs, fs.Missing):
                missing.append(obs.rel)
            elif isinstance(obs, fs.Refused):
                self._log_refused(obs)
        self.batcher.add(self.tracker.missing(missing, now, wall))

    def _log_refused(self, obs: fs.Refused) -> None:
        if obs.path in self._refused:
            return
        if len(self._refused) >= _REFUSED_MEMORY:
            self._refused.clear()
        self._refused.add(obs.path)
        log.warning("filewatch.path_refused", trigger=self.name, path=obs.path, reason=obs.reason)


def _observe_all(policy: fs.PathPolicy, paths: set[str]) -> list[fs.Observation]:
    found: list[fs.Observation] = []
    for path in sorted(paths):
        obs = fs.observe(policy, path)
        found.append(obs)
        if isinstance(obs, fs.Dir) and policy.recursive and not policy.dir_ignored(obs.rel):
            found.extend(fs.scan(policy, obs.rel))  # a directory moved in: its files
    return found


def _hash_all(due: list[Pending]) -> list[tuple[Pending, str | fs.Stat | OSError]]:
    return [(p, fs.hash_file(p.real, p.stat)) for p in due]


async def _set_when_cancelled(stop: threading.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        stop.set()


async def _sleep_then_cancel(clock: Clock, deadline: float, scope: anyio.CancelScope) -> None:
    await clock.sleep_until(deadline)
    scope.cancel()
