"""When a file is complete: the ``filewatch`` source's state machine (no I/O here).

A file seen with fingerprint ``S`` becomes *pending*, due ``settle`` seconds later. When it
is due the source hashes it, checking the fingerprint is still ``S`` before and after
reading; a file that changed in between goes back to pending with a fresh quiet period.
So a file fires once it has had no size/mtime change for ``settle`` seconds.

The quiet period counts from the file's mtime, so a file whose mtime is already
``settle`` old when first seen (``mv`` of a finished file into the root, ``cp -p``, files
present at start) is due at once. A file renamed into place is due at once too — the
rename is the writer's "done" — when either its inode was last seen under an in-progress
name inside the root (``.x.tmp``, ``x.part``), or the caller saw an in-progress name that
contains its name (``.report.csv.tmp`` for ``report.csv``) vanish from the same directory
in the same watcher batch.

Versions are compared with the cursor (what was delivered) and with what is *in flight*
(emitted, not yet delivered), so nothing is emitted twice for one version.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventrun.sources.filewatch._cursor import Cursor, Entry
from eventrun.sources.filewatch._events import RecordBuilder
from eventrun.sources.filewatch._scan import File, Stat

__all__ = ["Output", "Pending", "Tracker"]

_TEMP_INODES = 4096


@dataclass(slots=True)
class Pending:
    rel: str
    real: str
    stat: Stat
    due: float
    """Monotonic time at which the file is complete if it has not changed."""


@dataclass(slots=True, frozen=True)
class Output:
    """One change for the runtime: a record to deliver (None when the trigger does not
    fire for this kind) and the cursor update to make once it is delivered."""

    rel: str
    entry: Entry | None
    """The new version, or None for a removal."""
    record: dict[str, Any] | None
    at: float
    """Monotonic time at which it was emitted (for maximum_batching_window)."""


class Tracker:
    def __init__(
        self,
        cursor: Cursor,
        builder: RecordBuilder,
        *,
        settle: float,
        fire_created: bool,
        fire_removed: bool,
    ) -> None:
        self.cursor = cursor
        self.builder = builder
        self.settle = settle
        self.fire_created = fire_created
        self.fire_removed = fire_removed
        self.pending: dict[str, Pending] = {}
        self.inflight: dict[str, Entry | None] = {}
        self._temp_inodes: OrderedDict[int, None] = OrderedDict()

    def known(self, rel: str) -> Entry | None:
        """The last version emitted for ``rel`` (in flight or delivered), None if absent."""
        if rel in self.inflight:
            return self.inflight[rel]
        return self.cursor.get(rel)

    def known_paths(self) -> set[str]:
        paths = set(self.cursor)
        for rel, entry in self.inflight.items():
            if entry is None:
                paths.discard(rel)
            else:
                paths.add(rel)
        return paths

    def temp_seen(self, ino: int) -> None:
        self._temp_inodes[ino] = None
        self._temp_inodes.move_to_end(ino)
        while len(self._temp_inodes) > _TEMP_INODES:
            self._temp_inodes.popitem(last=False)

    def file(self, obs: File, now: float, wall: float, *, renamed: bool = False) -> None:
        """A wanted file exists with ``obs.stat``; ``renamed``: it just replaced an
        in-progress name (the caller saw that name vanish in the same watcher batch)."""
        known = self.known(obs.rel)
        if known is not None and known.stat == obs.stat:
            self.pending.pop(obs.rel, None)
            return
        current = self.pending.get(obs.rel)
        if current is not None and current.stat == obs.stat:
            return
        if obs.stat.ino in self._temp_inodes:
            del self._temp_inodes[obs.stat.ino]
            renamed = True
        # The quiet period counts from the last modification, not from when we noticed it.
        age = max(0.0, wall - obs.stat.mtime_ns / 1e9)
        due = now if renamed else now + max(0.0, self.settle - age)
        self.pending[obs.rel] = Pending(obs.rel, obs.real, obs.stat, due)

    def missing(self, rels: Iterable[str], now: float, wall: float) -> list[Output]:
        """These paths are gone; a path may have been a directory (all under it is gone)."""
        out: list[Output] = []
        prefixes: set[str] = set()
        for rel in rels:
            self.pending.pop(rel, None)
            if self.known(rel) is not None:
                out.append(self._removed(rel, now, wall))
            else:
                prefixes.add(rel)
        if prefixes:
            for rel in sorted(self.known_paths()):
                if _under(rel, prefixes):
                    out.append(self._removed(rel, now, wall))
            for rel in [r for r in self.pending if _under(r, prefixes)]:
                del self.pending[rel]
        return out

    def _removed(self, rel: str, now: float, wall: float) -> Output:
        self.inflight[rel] = None
        record = self.builder.removed(rel, wall) if self.fire_removed else None
        return Output(rel, None, record, now)

    def next_due(self) -> float | None:
        return min((p.due for p in self.pending.values()), default=None)

    def pop_due(self, now: float) -> list[Pending]:
        due = [p for p in self.pending.values() if p.due <= now]
        for p in due:
            del self.pending[p.rel]
        return due

    def complete(self, p: Pending, etag: str, now: float, wall: float) -> Output | None:
        """``p`` was quiet for its settle period and hashed to ``etag``."""
        known = self.known(p.rel)
        if known is not None and known.stat == p.stat:
            return None
        entry = Entry(p.stat, etag)
        self.inflight[p.rel] = entry
        record = self.builder.created(p.rel, p.stat.size, etag, wall) if self.fire_created else None
        return Output(p.rel, entry, record, now)

    def delivered(self, outputs: Iterable[Output]) -> None:
        """Move delivered outputs from in flight into the cursor (flushed by the caller)."""
        for o in outputs:
            if o.entry is None:
                self.cursor.drop(o.rel)
            else:
                self.cursor.put(o.rel, o.entry)
            if self.inflight.get(o.rel, ...) is o.entry:
                del self.inflight[o.rel]

    def forget(self, rel: str) -> None:
        """Drop ``rel`` silently (no longer matches the trigger's rules)."""
        self.pending.pop(rel, None)
        if rel not in self.inflight:
            self.cursor.drop(rel)


def _under(rel: str, prefixes: set[str]) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[:i]) in prefixes for i in range(1, len(parts)))
