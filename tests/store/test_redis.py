"""RedisStore against a real redis-server: the shared Store contract, isolation, failures."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from eventrun.exceptions import QueueFull, StoreError
from eventrun.store import QueueLimits
from eventrun.store._open import open_store
from eventrun.store._redis import RedisStore
from eventrun.testing import FakeClock
from tests import _store_conformance as conformance
from tests.fixtures._ports import free_port
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda check: check.__name__[6:])
async def test_conformance(check: conformance.Check, redis_url: str) -> None:
    await check(lambda **options: RedisStore(redis_url, prefix="test:", **options))


async def test_prefixes_isolate_stores_on_one_server(redis_url: str) -> None:
    async with RedisStore(redis_url, prefix="a:") as a, RedisStore(redis_url, prefix="b:") as b:
        await a.put("local:q", [b"1"])
        await a.kv_set("k", b"a")
        assert await b.depth("local:q") == 0
        assert await b.queues() == []
        assert await b.kv_get("k") is None
        assert await b.lease("local:q", now=time.time(), limit=10, lease_s=5) == []


async def test_many_concurrent_leasers_on_one_server_split_the_work(redis_url: str) -> None:
    total = 2000
    stores = [RedisStore(redis_url) for _ in range(4)]
    async with stores[0] as s0, stores[1] as s1, stores[2] as s2, stores[3] as s3:
        ids = await s0.put("async:f", [b"%d" % i for i in range(total)])
        taken: list[str] = []

        async def drain(store: RedisStore) -> None:
            while batch := await store.lease("async:f", now=time.time(), limit=25, lease_s=300):
                taken.extend(e.id for e in batch)
                await store.ack("async:f", [e.id for e in batch])

        async with anyio.create_task_group() as tg:
            for store in (s0, s1, s2, s3, s0, s1, s2, s3):
                tg.start_soon(drain, store)
    assert len(taken) == total
    assert set(taken) == set(ids)


async def test_purge_removes_more_than_one_chunk(redis_url: str) -> None:
    async with open_store(redis_url, config_dir=Path.cwd()) as store:
        for _ in range(3):
            await store.put("local:big", [b"x"] * 1000)
        await store.put("local:big", [b"x"] * 10)
        assert await store.purge("local:big") == 3010
        assert await store.depth("local:big") == 0
        assert await store.queues() == []


async def test_unreachable_server_is_a_store_error_that_hides_the_password() -> None:
    port = free_port()
    with pytest.raises(StoreError) as caught:
        async with RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0"):
            pass
    assert f"redis://127.0.0.1:{port}/0" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_server_going_away_is_a_store_error() -> None:
    server = RedisServer()
    server.start()
    try:
        async with RedisStore(server.url) as store:
            await store.put("local:q", [b"1"])
            server.stop()
            with pytest.raises(StoreError, match=f"127.0.0.1:{server.port}"):
                await store.depth("local:q")
    finally:
        server.stop()


async def test_enqueued_at_comes_from_the_given_clock(redis_url: str) -> None:
    async with RedisStore(redis_url, clock=FakeClock(start=1_000_000.0)) as store:
        [entry_id] = await store.put("async:f", [b"{}"])
        entry = await store.get("async:f", entry_id)
        assert entry is not None
        assert entry.enqueued_at == 1_000_000.0


async def test_closed_store_is_a_store_error(redis_url: str) -> None:
    store = RedisStore(redis_url)
    with pytest.raises(StoreError, match="closed"):
        await store.put("local:q", [b"1"])


async def test_queues_from_before_the_caps_are_counted_and_indexed_once(redis_url: str) -> None:
    """Entries written before the ``bytes`` counter and the ``time`` index existed: the
    first put counts the bytes, the first trim indexes them by time."""
    clock = FakeClock(start=1_000_000.0)
    limits = QueueLimits(max_depth=10, max_bytes=12)
    async with RedisStore(redis_url, prefix="old:", clock=clock, limits=limits) as store:
        await store.put("local:q", [b"12345", b"678"])
        await clock.advance(100)
        await store.put("local:q", [b"9"])
        client = aioredis.Redis.from_url(redis_url)
        async with client:
            await client.delete("old:q:{local:q}:bytes", "old:q:{local:q}:time")
        with pytest.raises(QueueFull):
            await store.put("local:q", [b"abcd"])  # 9 counted again + 4 > 12
        assert await store.usage("local:q") == (3, 9)
        assert await store.trim("local:q", enqueued_before=1_000_050.0) == 2
        assert await store.usage("local:q") == (1, 1)
