"""The ``filewatch`` trigger: S3-shaped events for complete files in a local directory.

A push source: ``serve`` watches ``path`` (relative to the config file's directory) with
watchfiles (the Rust ``notify`` crate, run in a worker thread) and hands S3 event
notifications to the runtime with ``await ctx.invoke_async({"Records": [...]})``.

Contract (see the helper modules for the details):

* **Complete files only.** A file fires once it has had no size/mtime change for
  ``settle`` seconds (default 0.5), re-checked while its MD5 is computed. It fires at
  once when it was renamed into place from an in-progress name inside the root
  (``.x.tmp`` -> ``x``) or when its mtime is already ``settle`` old (a finished file moved
  in). A file written slowly fires exactly once, after it is complete; its record
  carries the final size and MD5 ``eTag``. (watchfiles does not report close-write, so
  a writer that pauses longer than ``settle`` mid-file is seen as done: raise ``settle``.)
* **In-progress names are ignored** by default: ``*.tmp``, ``*.part``, ``~*``, ``*~``,
  ``.#*``, editor swap files... (``_filewatch_scan.IN_PROGRESS_NAMES``), unless a
  pattern of that form itself (``*.part``) names them. ``ignore`` wins over ``patterns``; both
  are fnmatch globs tried on the relative path and on the base name.
* **Events:** ``ObjectCreated:Put`` for each complete new version of a file,
  ``ObjectRemoved:Delete`` (if ``events`` has ``removed``) when a delivered file goes;
  bucket = the watched directory's name, key = URL-encoded relative path.
  Up to ``batch_size`` records per event, an incomplete batch waiting at most
  ``maximum_batching_window`` seconds (0: sent at once).
* **Exactly one event per version across restarts:** the cursor (``ctx.state``) records
  each delivered version; ``on_startup: existing`` fires for files present at start that
  were not delivered yet (and removals that happened while stopped); ``none`` (the
  config default) takes the directory as it is at start as the starting point.
* **Recovery:** after a watcher failure, and every ``rescan_interval_s`` (60 s; covers
  kernel queue overflows, which watchfiles does not report), the root is rescanned and
  whatever the watcher missed fires; the cursor makes rescans idempotent.
* **Path safety:** the root is resolved at start and must be a directory (ConfigError
  naming it otherwise); paths whose real location is outside it (symlinks, ``..``) are
  refused with ``filewatch.path_refused`` and never read.

Logs: ``filewatch.fired`` (one line per delivered event: count, batch_size),
``filewatch.rescan``, ``filewatch.path_refused``, ``filewatch.watch_failed``,
``filewatch.read_failed``, ``filewatch.root_missing``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from eventrun.abc import SourceContext, SourceSpec
from eventrun.exceptions import ConfigError
from eventrun.sources.filewatch._engine import Engine, Options
from eventrun.sources.filewatch._scan import PathPolicy
from eventrun.sources.filewatch._watcher import Notify, NotifyFactory

__all__ = ["RESCAN_INTERVAL_S", "FileWatchSource", "create"]

RESCAN_INTERVAL_S = 60.0
_EVENTS = frozenset({"created", "removed"})


def create(spec: SourceSpec) -> FileWatchSource:
    """Entry point ``eventrun.sources: filewatch``."""
    return FileWatchSource(spec)


def _rust_notify(root: str, recursive: bool) -> Notify:
    # The documented low-level backend of watchfiles (docs: "Rust backend"); used directly
    # so the watcher exists before serve() reports started and stops via our flag.
    from watchfiles._rust_notify import RustNotify

    notify: Notify = RustNotify([root], False, False, 300, recursive, True)
    return notify


class FileWatchSource:
    """A :class:`~eventrun.abc.PushSource` over one directory."""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        rescan_interval_s: float = RESCAN_INTERVAL_S,
        notify_factory: NotifyFactory = _rust_notify,
    ) -> None:
        self.spec = spec
        cfg = spec.config
        where = f"{spec.name}: filewatch"
        path = getattr(cfg, "path", None)
        if not path:
            raise ConfigError(f"{where}.path: a directory is required, got {path!r}")
        self.path = str(path)
        self.root = (Path(spec.config_dir) / self.path).resolve()
        events = frozenset(getattr(cfg, "events", None) or ["created"])
        if not events <= _EVENTS:
            raise ConfigError(
                f"{where}.events: must be created and/or removed, got {sorted(events)}"
            )
        on_startup = getattr(cfg, "on_startup", None) or "none"
        if on_startup not in ("existing", "none"):
            raise ConfigError(f"{where}.on_startup: must be existing or none, got {on_startup!r}")
        self.options = Options(
            root=self.root,
            events=events,
            settle=_number(cfg, "settle", 0.5, where),
            batch_size=int(_number(cfg, "batch_size", 1, where, minimum=1)),
            window=_number(cfg, "maximum_batching_window", 0.0, where),
            on_startup=on_startup,
            rescan_interval_s=rescan_interval_s,
        )
        self.policy = PathPolicy(
            self.root,
            list(getattr(cfg, "patterns", None) or ["*"]),
            list(getattr(cfg, "ignore", None) or []),
            bool(getattr(cfg, "recursive", True)),
        )
        self._factory = notify_factory
        self._check_root()

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise ConfigError(
                f"{self.spec.name}: filewatch.path: must be an existing directory, got "
                f"{self.path!r} (resolved to {self.root}); create it or fix the path"
            )

    async def serve(
        self, ctx: SourceContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until cancelled; ``started()`` once the watcher runs and the startup scan
        is done (files found then fire right after)."""
        self._check_root()
        engine = Engine(self.options, self.policy, ctx, self._factory)
        await engine.run(task_status=task_status)


def _number(cfg: Any, name: str, default: float, where: str, minimum: float = 0.0) -> float:
    value = getattr(cfg, name, None)
    if value is None:
        return default
    number = float(value)
    if number < minimum:
        raise ConfigError(f"{where}.{name}: must be >= {minimum:g}, got {value!r}")
    return number
