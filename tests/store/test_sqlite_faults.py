"""The embedded store under faults (issue 27): a disk that fills mid-run, a file that is not
a database, a file written by a newer eventrun. Each is a clear StoreError; nothing is
reported written that was not; the store recovers by itself when space returns; a bad
file is never silently reset."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from eventrun.exceptions import StoreError
from eventrun.store._sqlite import SCHEMA_VERSION, SqliteStore


async def test_a_full_disk_fails_writes_clearly_and_recovers_when_space_returns(
    small_disk: Path,
) -> None:
    store = SqliteStore(small_disk / "state.db")
    payload = os.urandom(2048)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 512 * 1024)  # what an operator will delete
    async with store:
        written: list[str] = []

        async def fill() -> None:
            for _ in range(2000):  # ~4 MiB: more than the disk holds
                written.extend(await store.put("q", [payload]))

        with pytest.raises(StoreError) as caught:
            await fill()
        message = str(caught.value)
        assert str(small_disk / "state.db") in message
        assert "disk is full" in message
        assert "free space" in message
        # every put that returned is there; the failed one left nothing behind
        assert await store.depth("q") == len(written)

        # the last free pages, filled with small writes, so even a lease finds none
        async def fill_up() -> None:
            for _ in range(10_000):
                written.extend(await store.put("q", [b"x"]))

        with pytest.raises(StoreError, match="disk is full"):
            await fill_up()
        assert await store.depth("q") == len(written)
        # reads keep working (a lease writes, so it waits for space like a put)
        assert [e.id for e in await store.peek("q", limit=5)] == written[:5]
        with pytest.raises(StoreError, match="disk is full"):
            await store.lease("q", now=1e12, limit=5, lease_s=30)
        # space returns (an operator deletes a file): writes work again, by themselves
        filler.unlink()
        more = await store.put("q", [b"after"])
        await store.ack("q", written[: len(written) // 2])
        assert await store.depth("q") == len(written) - len(written) // 2 + 1
        assert more[0] in {e.id for e in await store.peek("q", limit=len(written))}


async def test_a_file_that_is_not_a_database_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not an SQLite database, it is somebody's notes\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as caught:
        async with SqliteStore(path):
            pass
    assert f"cannot open the SQLite store {path}" in str(caught.value)
    assert "not a database" in str(caught.value)
    assert path.read_bytes() == garbage  # untouched


async def test_a_store_from_a_newer_eventrun_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path) as store:
        await store.put("q", [b"kept"])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError) as caught:
        async with SqliteStore(path):
            pass
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"reads up to {SCHEMA_VERSION}" in message
    assert "upgrade eventrun" in message
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1
    conn.close()


async def test_a_new_store_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
