"""SqliteStore: the shared Store contract, crash durability, URLs and failures."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import anyio
import pytest

from eventrun.exceptions import QueueFull, StoreError
from eventrun.store import QueueLimits
from eventrun.store._open import open_store
from eventrun.store._redis import RedisStore
from eventrun.store._sqlite import CLAIM_PURGE_EVERY, SqliteStore
from eventrun.testing import FakeClock
from tests import _store_conformance as conformance

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__[6:])
async def test_conformance(check: conformance.Check, tmp_path: Path) -> None:
    await check(lambda **options: SqliteStore(tmp_path / "nested" / "dir" / "state.db", **options))


_CHILD = """
import sys, anyio
from eventrun.store._sqlite import CLAIM_PURGE_EVERY, SqliteStore

async def main() -> None:
    async with SqliteStore(sys.argv[1]) as store:
        ids = await store.put("async:f", [b"first", b"second"], meta={"n": 1})
        await store.lease("async:f", now=float(sys.argv[2]), limit=1, lease_s=30)
        await store.kv_set("cursor", b"42")
        print("IDS", " ".join(ids), flush=True)
        await anyio.sleep(3600)

anyio.run(main)
"""


async def test_entries_survive_sigkill_and_a_dead_daemons_lease_expires(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    t = time.time()
    process = await anyio.open_process([sys.executable, "-c", _CHILD, str(db), repr(t)], cwd=REPO)
    async with process:
        assert process.stdout is not None
        with anyio.fail_after(30):
            output = b""
            async for chunk in process.stdout:
                output += chunk
                if b"IDS " in output and output.endswith(b"\n"):
                    break
        process.kill()  # SIGKILL: no close, no checkpoint; the commits live only in the WAL
        assert await process.wait() == -9
    ids = output.split(b"IDS ")[1].decode().split()
    assert len(ids) == 2

    async with SqliteStore(db) as store:
        assert await store.depth("async:f") == 2
        assert await store.kv_get("cursor") == b"42"
        [second] = await store.lease("async:f", now=t + 1, limit=10, lease_s=300)
        assert (second.id, second.payload, second.meta) == (ids[1], b"second", {"n": 1})
        [first] = await store.lease("async:f", now=t + 31, limit=10, lease_s=30)
        assert (first.id, first.payload) == (ids[0], b"first")


async def test_kv_claim_follows_the_callers_clock(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        assert await store.kv_claim("cron:x", 10, now=1000.0)
        assert not await store.kv_claim("cron:x", 10, now=1009.9)
        assert await store.kv_claim("cron:x", 10, now=1010.0)
        assert not await store.kv_claim("cron:x", 10, now=1019.0)


async def test_expired_claims_do_not_pile_up(tmp_path: Path) -> None:
    """A cron tick's claim is never claimed again: expired ones are deleted as claims go
    on (the table grew by a row a tick for good, found by the soak), live ones kept."""
    db = tmp_path / "s.db"
    async with SqliteStore(db) as store:
        await store.kv_set("cursor", b"7")
        for tick in range(2000):  # a schedule every second, claims held 90 s
            assert await store.kv_claim(f"tick:{tick}", 90, now=float(tick))
        assert not await store.kv_claim("tick:1990", 90, now=2000.0), "a live claim is kept"
        assert await store.kv_get("cursor") == b"7"
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
    conn.close()
    assert rows <= 1 + 90 + CLAIM_PURGE_EVERY, f"{rows} kv rows after 2000 one-off claims"


async def test_enqueued_at_comes_from_the_given_clock(tmp_path: Path) -> None:
    clock = FakeClock(start=1_000_000.0)
    async with SqliteStore(tmp_path / "s.db", clock=clock) as store:
        [entry_id] = await store.put("async:f", [b"{}"])
        entry = await store.get("async:f", entry_id)
        assert entry is not None
        assert entry.enqueued_at == 1_000_000.0


async def test_a_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    with pytest.raises(StoreError, match="closed"):
        await store.put("local:x", [b"1"])
    async with store:
        await store.put("local:x", [b"1"])
    with pytest.raises(StoreError, match="closed"):
        await store.depth("local:x")


async def test_a_database_error_while_open_is_a_store_error_naming_the_file(
    tmp_path: Path,
) -> None:
    """The file changed under the daemon (its table dropped by hand): the failing write is
    a StoreError naming the file, and it left nothing half-done."""
    path = tmp_path / "s.db"
    async with SqliteStore(path) as store:
        await store.put("local:x", [b"1"])
        other = sqlite3.connect(path)
        other.execute("DROP TABLE entries")
        other.commit()
        other.close()
        with pytest.raises(StoreError, match=r"^SQLite store .*s\.db: no such table: entries"):
            await store.put("local:x", [b"2"])
        with pytest.raises(StoreError, match="no such table"):
            await store.peek("local:x")


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"state\.db"):
        async with SqliteStore(bad):
            pass


async def test_in_memory_store_works(tmp_path: Path) -> None:
    async with open_store("sqlite:///:memory:", config_dir=tmp_path) as store:
        [entry_id] = await store.put("local:m", [b"1"])
        assert [e.id for e in await store.peek("local:m")] == [entry_id]
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


def test_open_store_resolves_sqlite_paths(tmp_path: Path) -> None:
    rel = open_store("sqlite:///data/state.db", config_dir=tmp_path)
    assert isinstance(rel, SqliteStore)
    assert rel.path == tmp_path / "data" / "state.db"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db?synchronous=full", config_dir=Path("/x"))
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == tmp_path / "abs.db"


def test_open_store_redis_urls_connect_lazily(tmp_path: Path) -> None:
    store = open_store("redis://127.0.0.1:1/3?prefix=app1:", config_dir=tmp_path)
    assert isinstance(store, RedisStore)
    assert (store.url, store.prefix) == ("redis://127.0.0.1:1/3", "app1:")
    tls = open_store("rediss://:secret@cache.example:6380/0", config_dir=tmp_path)
    assert isinstance(tls, RedisStore)
    assert tls.prefix == "eventrun:"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/x", "unknown store 'postgres://db/x'"),
        ("state.db", "unknown store"),
        ("mysql://user:pw@db/x", "unknown store 'mysql://db/x'"),
        ("sqlite://host/state.db", "three slashes"),
        ("sqlite:///", "three slashes"),
        ("sqlite:state.db", "three slashes"),  # no "//": still read as a SQLite URL
        ("sqlite:///s.db?synchronous=off", "synchronous=normal|full"),
        ("sqlite:///s.db?journal=wal", "synchronous=normal|full"),
        ("redis:///0", "names no Redis host"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url, config_dir=tmp_path)


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    """A second process leasing from the same file never gets what this one leased."""
    db = tmp_path / "shared.db"
    t = time.time()
    async with SqliteStore(db) as store:
        ids = await store.put("async:f", [b"%d" % i for i in range(10)])
        mine = await store.lease("async:f", now=t, limit=4, lease_s=60)
        child = (
            "import sys, anyio\n"
            "from eventrun.store._sqlite import SqliteStore\n"
            "async def main():\n"
            "    async with SqliteStore(sys.argv[1]) as s:\n"
            "        t = float(sys.argv[2])\n"
            "        got = await s.lease('async:f', now=t, limit=100, lease_s=60)\n"
            "        print('IDS', ' '.join(e.id for e in got))\n"
            "anyio.run(main)\n"
        )
        result = await anyio.run_process([sys.executable, "-c", child, str(db), repr(t)], cwd=REPO)
        theirs = result.stdout.split(b"IDS ")[1].decode().split()
        assert [e.id for e in mine] == ids[:4]
        assert theirs == ids[4:]
        assert await store.lease("async:f", now=t, limit=100, lease_s=60) == []


def test_a_database_from_before_the_caps_is_counted_once_when_opened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " queue TEXT NOT NULL, payload BLOB NOT NULL, enqueued_at REAL NOT NULL,"
        " available_at REAL NOT NULL DEFAULT 0, leased_until REAL NOT NULL DEFAULT 0,"
        " attempts INTEGER NOT NULL DEFAULT 0, meta TEXT NOT NULL DEFAULT '{}');"
        "INSERT INTO entries (id, queue, payload, enqueued_at) VALUES"
        " ('a', 'local:q', x'0102', 1.0), ('b', 'local:q', x'030405', 2.0),"
        " ('c', 'async:f', x'06', 3.0);"
    )
    conn.commit()
    conn.close()

    async def main() -> None:
        limits = QueueLimits(max_depth=3, max_bytes=100)
        async with SqliteStore(db, limits=limits) as store:
            assert await store.usage("local:q") == (2, 5)
            assert await store.usage("async:f") == (1, 1)
            await store.put("local:q", [b"6"])
            with pytest.raises(QueueFull):
                await store.put("local:q", [b"7"])
        async with SqliteStore(db, limits=limits) as store:  # counted once, not twice
            assert await store.usage("local:q") == (3, 6)
            assert await store.trim("local:q", enqueued_before=1.5) == 1
            assert await store.usage("local:q") == (2, 4)

    anyio.run(main)
