"""The ``filewatch`` cursor: which version of which file was already handed to the runtime.

Stored in the source's :class:`~eventrun.abc.KeyValueState` as :data:`BUCKETS` JSON
manifests keyed ``filewatch:TRIGGER:v1:XX``, a file going to bucket
``crc32(relative path) % BUCKETS``. A delivered batch rewrites only the buckets it
touched, so 10,000 files cost 256 small values (about 40 entries each) rather than
10,000 keys or one megabyte rewritten per batch. The whole manifest is held in memory
(about 150 bytes per file).

An entry is ``[size, mtime_ns, inode, etag]``; a file whose current (size, mtime, inode)
differs from its entry is a new version and fires again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import anyio

from eventrun.abc import KeyValueState
from eventrun.sources.filewatch._scan import Stat

__all__ = ["BUCKETS", "Cursor", "Entry"]

BUCKETS = 256
_WRITE_CONCURRENCY = 8


@dataclass(slots=True, frozen=True)
class Entry:
    stat: Stat
    etag: str

    def to_json(self) -> list[int | str]:
        return [self.stat.size, self.stat.mtime_ns, self.stat.ino, self.etag]


class Cursor:
    """In-memory manifest of handled files, persisted per bucket on :meth:`flush`."""

    def __init__(self, state: KeyValueState, trigger: str) -> None:
        self._state = state
        self._prefix = f"filewatch:{trigger}:v1:"
        self._buckets: list[dict[str, Entry]] = [{} for _ in range(BUCKETS)]
        self._dirty: set[int] = set()

    @staticmethod
    def _bucket(rel: str) -> int:
        return zlib.crc32(rel.encode()) % BUCKETS

    def _key(self, index: int) -> str:
        return f"{self._prefix}{index:02x}"

    async def load(self) -> None:
        """Read every bucket (missing ones are empty)."""
        for index in range(BUCKETS):
            raw = await self._state.get(self._key(index))
            if not raw:
                continue
            files = json.loads(raw)["files"]
            self._buckets[index] = {
                rel: Entry(Stat(int(v[0]), int(v[1]), int(v[2])), str(v[3]))
                for rel, v in files.items()
            }

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def __iter__(self) -> Iterator[str]:
        for bucket in self._buckets:
            yield from list(bucket)

    def get(self, rel: str) -> Entry | None:
        return self._buckets[self._bucket(rel)].get(rel)

    def put(self, rel: str, entry: Entry) -> None:
        index = self._bucket(rel)
        self._buckets[index][rel] = entry
        self._dirty.add(index)

    def drop(self, rel: str) -> None:
        index = self._bucket(rel)
        if self._buckets[index].pop(rel, None) is not None:
            self._dirty.add(index)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    async def flush(self) -> int:
        """Write the buckets changed since the last flush; return how many were written."""
        dirty, self._dirty = sorted(self._dirty), set()
        limiter = anyio.CapacityLimiter(_WRITE_CONCURRENCY)

        async def write(index: int) -> None:
            async with limiter:
                files = {rel: e.to_json() for rel, e in self._buckets[index].items()}
                body = json.dumps({"files": files}, separators=(",", ":")).encode()
                await self._state.set(self._key(index), body)

        try:
            async with anyio.create_task_group() as tg:
                for index in dirty:
                    tg.start_soon(write, index)
        except BaseException:
            self._dirty.update(dirty)
            raise
        return len(dirty)
