"""The embedded store: one SQLite file (``sqlite:///state.db``), the single-machine default.

Durability: the database runs in WAL mode. With ``synchronous="NORMAL"`` (the default) a
commit is written to the WAL before :meth:`SqliteStore.put` returns, so it survives the
daemon being killed (SIGKILL, OOM, crash); only an OS crash or power loss may roll back
the last few commits. ``synchronous="FULL"`` (``sqlite:///state.db?synchronous=full``)
fsyncs the WAL on every commit and survives those too, at a cost of one fsync per call.

Concurrency: one connection, used by one worker thread at a time (a dedicated
``CapacityLimiter(1)``), so calls never block the event loop and never interleave. Every
write runs in a ``BEGIN IMMEDIATE`` transaction, which also makes several processes on
one file safe (a lease takes the write lock before it selects, so two daemons never lease
the same entry); batches (``put`` of many payloads, ``ack`` of many ids) are one
transaction each.

Ordering: entries carry an ``INTEGER PRIMARY KEY AUTOINCREMENT`` ``seq``; ``lease`` scans a
queue's ``(queue, seq)`` index from its head and skips leased or delayed entries, which
are few (in flight or waiting for a retry). An index led by ``available_at`` would make
every lease sort the whole ready backlog instead. Lookups by id write ``+queue`` so the
planner uses the id index, not a scan of the queue (20 ms per ack at 100k entries).

Caps: triggers keep ``queue_stats`` (entries and payload bytes per queue) current on every
insert and delete, so :meth:`SqliteStore.put` checks the caps with one primary-key lookup
inside its transaction; :meth:`SqliteStore.depth` and :meth:`SqliteStore.queues` read the
same counters (a ``COUNT(*)`` made both cost time in proportion to the queue: 3 ms at
100k entries, every 2 s for the metrics). A database from before the table existed is
counted once, the first time it is opened. Retention (:meth:`SqliteStore.trim`) walks
the ``(queue, enqueued_at)`` index.

Why this module is over 400 lines: it is one whole backend of the :class:`Store` interface
(queues, leases, DLQ, key-value state, caps), which reads best side by side with its SQL.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import structlog

from eventrun.abc import Clock
from eventrun.exceptions import QueueFull, StoreError
from eventrun.store._base import FullQueues, QueueEntry, QueueLimits, StoreFailures

__all__ = ["SqliteStore"]

_log = structlog.get_logger("eventrun.store")
_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the file's layout: a file with a higher one was written by a
newer eventrun and is refused, never reset (files from before versioning read as 0)."""

CLAIM_PURGE_EVERY = 64
"""Expired kv claims are deleted with every 64th claim (see ``SqliteStore.kv_claim``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    available_at REAL NOT NULL DEFAULT 0,
    leased_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS entries_queue_seq ON entries (queue, seq);
CREATE INDEX IF NOT EXISTS entries_queue_enqueued ON entries (queue, enqueued_at);
CREATE INDEX IF NOT EXISTS entries_queue_visible
    ON entries (queue, max(available_at, leased_until), seq);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
"""
_STATS = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS queue_stats (
    queue TEXT PRIMARY KEY,
    depth INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS entries_counted AFTER INSERT ON entries BEGIN
    INSERT INTO queue_stats (queue, depth, bytes) VALUES (new.queue, 1, length(new.payload))
    ON CONFLICT (queue) DO UPDATE SET depth = depth + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS entries_uncounted AFTER DELETE ON entries BEGIN
    UPDATE queue_stats SET depth = depth - 1, bytes = bytes - length(old.payload)
    WHERE queue = old.queue;
END;
"""
"""Per-queue counters for the caps, :meth:`SqliteStore.depth` and :meth:`SqliteStore.queues`.
Rows are never deleted, so an empty table next to a non-empty ``entries`` means a database
from before the caps: it is counted once (``_BACKFILL``), in the same transaction that
creates the triggers. Only then: the counting query scans every entry, so it must not run
on every open (it made opening a store of 10^6 entries take 0.1 s)."""
_BACKFILL = """
INSERT INTO queue_stats (queue, depth, bytes)
    SELECT queue, COUNT(*), COALESCE(SUM(length(payload)), 0) FROM entries GROUP BY queue
"""
_COLUMNS = "id, queue, payload, enqueued_at, available_at, attempts, meta, seq"
_CHUNK = 500
"""Ids per ``IN (...)`` statement, well under SQLite's bound-parameter limit."""


def _entry(row: tuple[Any, ...]) -> QueueEntry:
    meta = row[6]
    return QueueEntry(
        id=row[0],
        queue=row[1],
        payload=bytes(row[2]),
        enqueued_at=row[3],
        available_at=row[4],
        attempts=row[5],
        meta={} if meta == "{}" else json.loads(meta),
    )


class SqliteStore:
    """The :class:`eventrun.store.Store` on one SQLite file (or ``":memory:"``).

    Use as ``async with SqliteStore(path) as store``; the parent directory is created.
    ``clock`` (default: the system's) stamps ``enqueued_at`` and expires kv claims in
    :meth:`kv_get`.
    Every method raises :class:`StoreError` when SQLite fails or the store is closed; a
    full disk fails the write (nothing of it is kept) and the next write after space
    returns succeeds. Opening refuses a file that is not a database or was written by a
    newer eventrun (``SCHEMA_VERSION``), leaving it untouched.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 10.0,
        clock: Clock | None = None,
        limits: QueueLimits | None = None,
    ) -> None:
        self.path = path if str(path) == ":memory:" else Path(path)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._time = clock.time if clock is not None else time.time
        self.limits = limits or QueueLimits()
        self.full = FullQueues()
        self.failures = StoreFailures()
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._claims = 0

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._limiter = anyio.CapacityLimiter(1)
        try:
            self._conn = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        _log.debug("store.opened", backend="sqlite", path=str(self.path))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._limiter is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _open(self) -> sqlite3.Connection:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the SQLite store {self.path} has schema version {version}, written by a "
                    f"newer eventrun (this one reads up to {SCHEMA_VERSION}): upgrade eventrun, "
                    "or point store.url at another file; the file is left as it is"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
            try:
                conn.executescript(_STATS)  # leaves its transaction open
                if conn.execute("SELECT 1 FROM queue_stats LIMIT 1").fetchone() is None:
                    conn.execute(_BACKFILL)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _call(self, fn: Callable[[sqlite3.Connection], _T], write: bool = False) -> _T:
        """Run ``fn(conn)`` in the store's thread; inside a transaction when ``write``."""
        conn, limiter = self._conn, self._limiter
        if conn is None or limiter is None:
            raise StoreError(f"the SQLite store {self.path} is closed")

        def run() -> _T:
            try:
                if not write:
                    return fn(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    self.failures.failed("disk_full", str(exc))
                    raise StoreError(
                        f"SQLite store {self.path}: {exc}: nothing was written; free space on "
                        "that filesystem and writes resume by themselves"
                    ) from exc
                self.failures.failed("error", str(exc))
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc

        result = await anyio.to_thread.run_sync(run, limiter=limiter)
        if write:
            self.failures.succeeded()
        return result

    # -- queues ----------------------------------------------------------------------

    async def put(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        available_at: float = 0.0,
        meta: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Append entries in one committed transaction; return their ids in order."""
        ids = [str(uuid.uuid4()) for _ in payloads]
        if not ids:
            return ids
        meta_json = json.dumps(dict(meta)) if meta else "{}"
        now = self._time()
        rows = [
            (entry_id, queue, payload, now, available_at, meta_json)
            for entry_id, payload in zip(ids, payloads, strict=True)
        ]

        adding = sum(len(p) for p in payloads)
        limits = self.limits

        def put(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT depth, bytes FROM queue_stats WHERE queue = ?", (queue,)
            ).fetchone()
            if row is not None:
                limits.check(queue, row[0], row[1], len(rows), adding)
            conn.executemany(
                "INSERT INTO entries (id, queue, payload, enqueued_at, available_at, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

        try:
            await self._call(put, write=True)
        except QueueFull as exc:
            self.full.refused(exc)
            raise
        self.full.accepted(queue)
        return ids

    async def lease(
        self, queue: str, *, now: float, limit: int, lease_s: float
    ) -> list[QueueEntry]:
        """Take up to ``limit`` available entries, hidden until ``now + lease_s``: new
        entries first, oldest first, then retried ones and those whose lease ran out, in
        the order they became available again.

        Walks the ``entries_queue_visible`` index from its start, so entries waiting
        (backoff, leased) cost nothing however many there are."""
        if limit <= 0:
            return []

        def lease(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                f"UPDATE entries SET leased_until = ? WHERE seq IN ("
                f" SELECT seq FROM entries WHERE queue = ?"
                f" AND max(available_at, leased_until) <= ?"
                f" ORDER BY max(available_at, leased_until), seq LIMIT ?) RETURNING {_COLUMNS}",
                (now + lease_s, queue, now, limit),
            ).fetchall()
            rows.sort(key=lambda row: row[7])
            return [_entry(row) for row in rows]

        return await self._call(lease, write=True)

    async def ack(self, queue: str, ids: Sequence[str]) -> None:
        """Delete entries in one transaction; unknown ids are ignored."""
        if not ids:
            return
        chunks = [list(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]

        def ack(conn: sqlite3.Connection) -> None:
            for chunk in chunks:
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"DELETE FROM entries WHERE id IN ({marks}) AND +queue = ?", [*chunk, queue]
                )

        await self._call(ack, write=True)

    async def retry(self, queue: str, entry_id: str, *, available_at: float, attempts: int) -> None:
        """Release a leased entry: available again at ``available_at`` with ``attempts``."""

        def retry(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE entries SET available_at = ?, attempts = ?, leased_until = 0"
                " WHERE id = ? AND +queue = ?",
                (available_at, attempts, entry_id, queue),
            )

        await self._call(retry, write=True)

    async def peek(self, queue: str, *, limit: int = 100, offset: int = 0) -> list[QueueEntry]:
        if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
            return []

        def peek(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE queue = ? ORDER BY seq LIMIT ? OFFSET ?",
                (queue, limit, offset),
            ).fetchall()
            return [_entry(row) for row in rows]

        return await self._call(peek)

    async def get(self, queue: str, entry_id: str) -> QueueEntry | None:
        def get(conn: sqlite3.Connection) -> QueueEntry | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id = ? AND +queue = ?", (entry_id, queue)
            ).fetchone()
            return None if row is None else _entry(row)

        return await self._call(get)

    async def depth(self, queue: str) -> int:
        def depth(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT depth FROM queue_stats WHERE queue = ?", (queue,)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._call(depth)

    async def usage(self, queue: str) -> tuple[int, int]:
        def usage(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute(
                "SELECT depth, bytes FROM queue_stats WHERE queue = ?", (queue,)
            ).fetchone()
            return (0, 0) if row is None else (int(row[0]), int(row[1]))

        return await self._call(usage)

    async def trim(self, queue: str, *, enqueued_before: float, keep: int | None = None) -> int:
        """Delete entries put before ``enqueued_before`` (by the time index), then the
        oldest beyond ``keep``; one transaction."""

        def trim(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM entries WHERE queue = ? AND enqueued_at < ?",
                (queue, enqueued_before),
            ).rowcount
            if keep is not None:
                row = conn.execute(
                    "SELECT depth FROM queue_stats WHERE queue = ?", (queue,)
                ).fetchone()
                excess = 0 if row is None else int(row[0]) - keep
                if excess > 0:
                    removed += conn.execute(
                        "DELETE FROM entries WHERE seq IN (SELECT seq FROM entries"
                        " WHERE queue = ? ORDER BY seq LIMIT ?)",
                        (queue, excess),
                    ).rowcount
            return removed

        return await self._call(trim, write=True)

    async def queues(self) -> list[str]:
        def queues(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT queue FROM queue_stats WHERE depth > 0 ORDER BY queue"
            ).fetchall()
            return [str(row[0]) for row in rows]

        return await self._call(queues)

    async def purge(self, queue: str) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM entries WHERE queue = ?", (queue,)).rowcount

        return await self._call(purge, write=True)

    # -- key/value -------------------------------------------------------------------

    async def kv_get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when absent or its claim expired (wall clock)."""
        now = self._time()

        def kv_get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._call(kv_get)

    async def kv_set(self, key: str, value: bytes) -> None:
        """Set ``key`` without expiry (replacing any claim on it)."""

        def kv_set(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, NULL)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL",
                (key, value),
            )

        await self._call(kv_set, write=True)

    async def kv_claim(self, key: str, ttl_s: float, *, now: float) -> bool:
        """Set ``key`` until ``now + ttl_s`` if absent or expired at ``now``; True if won.

        Every :data:`CLAIM_PURGE_EVERY` claims also delete the expired ones: claim keys
        are usually never claimed again (a cron tick's), and the table grew by one row a
        tick for good (86,400 a day for a schedule every second), in the file and in
        SQLite's page cache. An expired claim reads as absent, so deleting it changes
        nothing a caller can see."""
        self._claims += 1
        purge = self._claims % CLAIM_PURGE_EVERY == 0

        def kv_claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO kv (key, value, expires_at) VALUES (?, X'31', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " expires_at = excluded.expires_at"
                " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
                (key, now + ttl_s, now),
            )
            won = cursor.rowcount == 1
            if purge:
                conn.execute(
                    "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
                )
            return won

        return await self._call(kv_claim, write=True)

    async def kv_release(self, key: str) -> None:
        """Delete the claim on ``key`` (a plain value, without expiry, stays)."""

        def kv_release(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM kv WHERE key = ? AND expires_at IS NOT NULL", (key,))

        await self._call(kv_release, write=True)
