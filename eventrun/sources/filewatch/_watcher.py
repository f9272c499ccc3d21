"""The ``filewatch`` source's watcher: watchfiles' Rust backend in a worker thread.

One bounded ``watch()`` call at a time runs in a thread (at most ``WATCH_TIMEOUT_MS``;
returns early with ``"stop"`` once the stop flag is set, which the engine does when its
task group is cancelled). Reported paths are only hints, handed to ``on_paths``; the
engine looks at the file system itself.

Recovery: when ``watch()`` fails (``WatchfilesRustInternalError``, an OSError) the watcher
is reopened with backoff (0.5 s doubling to 30 s) and ``on_rescan("watch_failed")`` is
called. When the root itself is deleted or moved — possibly recreated, maybe even with the
same inode number — the old watch is dead: the watcher is reopened once the root exists
again and ``on_rescan("root_replaced")`` is called.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from eventrun.abc import Clock

__all__ = ["Notify", "NotifyFactory", "Watcher"]

log = structlog.get_logger("eventrun.sources.filewatch")

WATCH_DEBOUNCE_MS = 100
WATCH_STEP_MS = 20
WATCH_TIMEOUT_MS = 1000
REOPEN_S = 0.1
"""First wait before watching a replaced root again."""
_BACKOFF_S = 0.5
_BACKOFF_MAX_S = 30.0
_DELETED = 3
"""``watchfiles.Change.deleted``."""


class Notify(Protocol):
    """What the source needs of ``watchfiles``' ``RustNotify``."""

    def watch(
        self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: Any
    ) -> set[tuple[int, str]] | str: ...

    def close(self) -> None: ...


NotifyFactory = Callable[[str, bool], Notify]
"""``(root, recursive) -> Notify``; blocking, called in a worker thread."""


class Watcher:
    def __init__(
        self,
        root: Path,
        recursive: bool,
        factory: NotifyFactory,
        clock: Clock,
        trigger: str,
        *,
        on_paths: Callable[[set[str]], None],
        on_rescan: Callable[[str], None],
    ) -> None:
        self.root = root
        self._root_s = str(root)
        self.recursive = recursive
        self._factory = factory
        self.clock = clock
        self.trigger = trigger
        self._on_paths = on_paths
        self._on_rescan = on_rescan
        self._notify: Notify | None = None
        self._root_ino = 0

    def open(self) -> None:
        """Start watching (blocking: adds one inotify watch per directory)."""
        self._root_ino = os.stat(self.root).st_ino
        self._notify = self._factory(self._root_s, self.recursive)

    def close(self) -> None:
        """Only once no ``watch()`` call is running (after :meth:`run` returned)."""
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    async def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set."""
        backoff = _BACKOFF_S
        while True:
            try:
                assert self._notify is not None
                result = await anyio.to_thread.run_sync(
                    self._notify.watch, WATCH_DEBOUNCE_MS, WATCH_STEP_MS, WATCH_TIMEOUT_MS, stop
                )
                backoff = _BACKOFF_S
            except (RuntimeError, OSError) as exc:
                # WatchfilesRustInternalError is a RuntimeError.
                log.warning("filewatch.watch_failed", trigger=self.trigger, error=str(exc))
                backoff = await self._reopen(backoff)
                self._on_rescan("watch_failed")
                continue
            if result == "stop":
                return
            root_change = self._changes(result) if isinstance(result, set) else None
            if root_change == _DELETED or (
                root_change is not None and not await anyio.to_thread.run_sync(self._intact)
            ):
                log.warning("filewatch.root_replaced", trigger=self.trigger, path=self._root_s)
                backoff = await self._reopen(REOPEN_S)
                self._on_rescan("root_replaced")

    def _changes(self, changes: set[tuple[int, str]]) -> int | None:
        """Hand on changed paths; return how the root itself changed (deleted wins)."""
        root_change: int | None = None
        paths: set[str] = set()
        for change, path in changes:
            if path == self._root_s:
                root_change = change if root_change != _DELETED else root_change
            else:
                paths.add(path)
        if paths:
            self._on_paths(paths)
        return root_change

    def _intact(self) -> bool:
        try:
            return os.stat(self.root).st_ino == self._root_ino
        except OSError:
            return False

    async def _reopen(self, backoff: float) -> float:
        self.close()
        while True:
            await self.clock.sleep_until(self.clock.monotonic() + backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
            try:
                await anyio.to_thread.run_sync(self.open)
                return backoff
            except (RuntimeError, OSError) as exc:
                log.warning("filewatch.watch_failed", trigger=self.trigger, error=str(exc))
