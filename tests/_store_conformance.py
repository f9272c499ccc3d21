"""The Store contract, written once and run against every backend.

Each check is ``async def check(new_store)`` where ``new_store(**options)`` returns a new,
not yet entered store over the same data (a second ``SqliteStore`` on the same file, a
second ``RedisStore`` on the same server and prefix; ``options`` are the store's
``limits`` or ``clock``), so checks can close and reopen, or run two instances side by
side. Backend test modules parametrize over :data:`CHECKS`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

from eventrun.exceptions import QueueFull
from eventrun.store import QueueEntry, QueueLimits, Store
from eventrun.testing import FakeClock

NewStore = Callable[..., Store]
Check = Callable[[NewStore], Awaitable[None]]
Q = "async:orders"


def _payloads(entries: list[QueueEntry]) -> list[bytes]:
    return [e.payload for e in entries]


async def check_put_lease_ack_in_order(new_store: NewStore) -> None:
    async with new_store() as store:
        first = await store.put(Q, [b'{"n":0}', b'{"n":1}', b'{"n":2}'])
        second = await store.put(Q, [b'{"n":3}', b'{"n":4}'])
        assert len(set(first + second)) == 5
        now = time.time()
        leased = await store.lease(Q, now=now, limit=4, lease_s=30)
        assert [e.id for e in leased] == first + second[:1]
        assert _payloads(leased) == [b'{"n":0}', b'{"n":1}', b'{"n":2}', b'{"n":3}']
        assert all(e.queue == Q and e.attempts == 0 for e in leased)
        rest = await store.lease(Q, now=now, limit=10, lease_s=30)
        assert [e.id for e in rest] == second[1:]
        await store.ack(Q, [e.id for e in leased] + ["no-such-id"])
        assert await store.depth(Q) == 1
        await store.ack("local:other", second[1:])  # another queue's ack deletes nothing
        assert await store.depth(Q) == 1
        await store.ack(Q, second[1:])
        assert await store.depth(Q) == 0
        assert await store.lease(Q, now=now + 3600, limit=10, lease_s=30) == []


async def check_edge_cases(new_store: NewStore) -> None:
    async with new_store() as store:
        assert await store.put(Q, []) == []
        odd = bytes(range(256))
        ids = await store.put(Q, [b"", odd])
        assert await store.lease(Q, now=time.time(), limit=0, lease_s=30) == []
        await store.ack(Q, [])
        leased = await store.lease(Q, now=time.time(), limit=5, lease_s=30)
        assert [e.id for e in leased] == ids
        assert _payloads(leased) == [b"", odd]


async def check_lease_hides_until_it_expires(new_store: NewStore) -> None:
    async with new_store() as store:
        ids = await store.put(Q, [b"a", b"b", b"c"])
        t = time.time()
        held = await store.lease(Q, now=t, limit=2, lease_s=30)
        assert [e.id for e in held] == ids[:2]
        assert [e.id for e in await store.lease(Q, now=t + 1, limit=10, lease_s=30)] == ids[2:]
        assert await store.lease(Q, now=t + 29, limit=10, lease_s=30) == []
        # Still there while hidden: peek and depth see leased entries.
        assert [e.id for e in await store.peek(Q)] == ids
        assert await store.depth(Q) == 3
        # The first lease expires (its daemon died): the entries come back, oldest first.
        again = await store.lease(Q, now=t + 30.5, limit=10, lease_s=30)
        assert [e.id for e in again] == ids[:2]
        assert all(e.attempts == 0 for e in again)


async def check_retry_in_the_future(new_store: NewStore) -> None:
    async with new_store() as store:
        ids = await store.put(Q, [b"a", b"b"])
        t = time.time()
        [a] = await store.lease(Q, now=t, limit=1, lease_s=30)
        await store.retry(Q, a.id, available_at=t + 10, attempts=1)
        assert [e.id for e in await store.lease(Q, now=t + 1, limit=10, lease_s=9)] == ids[1:]
        assert await store.lease(Q, now=t + 9, limit=10, lease_s=5) == []
        # Both available again: the retried entry is older, so it comes first.
        back = await store.lease(Q, now=t + 11, limit=10, lease_s=30)
        assert [e.id for e in back] == ids
        assert back[0].attempts == 1
        assert back[0].available_at == t + 10
        got = await store.get(Q, a.id)
        assert got is not None
        assert got.attempts == 1
        # Retrying an entry that was acked is a no-op, not a resurrection.
        await store.ack(Q, [a.id])
        await store.retry(Q, a.id, available_at=t, attempts=2)
        assert await store.get(Q, a.id) is None
        assert await store.depth(Q) == 1


async def check_put_available_later(new_store: NewStore) -> None:
    async with new_store() as store:
        t = time.time()
        [later] = await store.put(Q, [b"later"], available_at=t + 60)
        [now] = await store.put(Q, [b"now"])
        assert [e.id for e in await store.lease(Q, now=t, limit=10, lease_s=300)] == [now]
        assert await store.lease(Q, now=t + 59, limit=10, lease_s=300) == []
        [e] = await store.lease(Q, now=t + 60, limit=10, lease_s=300)
        assert (e.id, e.available_at) == (later, t + 60)


async def check_peek_get_depth_queues_purge(new_store: NewStore) -> None:
    async with new_store() as store:
        before = time.time()
        ids = await store.put(
            "local:failed", [b"1", b"2", b"3", b"4"], meta={"key": "k1", "attributes": {"a": "b"}}
        )
        await store.put(Q, [b"x"])
        after = time.time()
        assert await store.queues() == sorted([Q, "local:failed"])
        assert await store.depth("local:failed") == 4
        assert await store.depth("local:empty") == 0
        page = await store.peek("local:failed", limit=2, offset=1)
        assert [e.id for e in page] == ids[1:3]
        assert await store.peek("local:failed", limit=10, offset=10) == []
        assert await store.peek("local:failed", limit=0) == []
        assert await store.peek("local:failed", limit=-1) == []  # not SQLite's "no limit"
        entry = await store.get("local:failed", ids[0])
        assert entry is not None
        assert entry.payload == b"1"
        assert entry.meta == {"key": "k1", "attributes": {"a": "b"}}
        assert before - 1 <= entry.enqueued_at <= after + 1
        assert await store.get("local:failed", "no-such-id") is None
        assert await store.get(Q, ids[0]) is None  # ids belong to their queue
        assert await store.purge("local:failed") == 4
        assert await store.purge("local:failed") == 0
        assert await store.queues() == [Q]
        assert await store.peek("local:failed") == []


async def check_kv(new_store: NewStore) -> None:
    async with new_store() as store:
        assert await store.kv_get("cursor") is None
        await store.kv_set("cursor", b"\x00one")
        await store.kv_set("cursor", b"two")
        assert await store.kv_get("cursor") == b"two"
        assert await store.kv_claim("cron:tick:1", 60, now=time.time())
        assert not await store.kv_claim("cron:tick:1", 60, now=time.time())
        assert await store.kv_claim("cron:tick:2", 60, now=time.time())
        assert await store.kv_get("cron:tick:1") is not None
        # A claim is held for its TTL, then free. Nothing signals a TTL running out, and
        # Redis expires on its own clock: ask until it is free, timing it from before the
        # claim (a busy machine may take longer than the TTL between two calls).
        began = time.monotonic()
        assert await store.kv_claim("cron:tick:3", 0.3, now=time.time())
        if await store.kv_claim("cron:tick:3", 0.3, now=time.time()):
            assert time.monotonic() - began >= 0.29, "claimed twice within its TTL"
        with anyio.fail_after(10):
            # no event for an expiry: ask again
            while not await store.kv_claim("cron:tick:3", 60, now=time.time()):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert time.monotonic() - began >= 0.29, "the claim expired before its TTL"
        assert not await store.kv_claim("cron:tick:3", 60, now=time.time())
        # A plain set replaces a claim and never expires.
        await store.kv_set("cron:tick:2", b"done")
        assert not await store.kv_claim("cron:tick:2", 60, now=time.time() + 3600)
        assert await store.kv_get("cron:tick:2") == b"done"
        # Released, a claim can be won again at once; a plain value is never released.
        await store.kv_release("cron:tick:3")
        assert await store.kv_get("cron:tick:3") is None
        assert await store.kv_claim("cron:tick:3", 60, now=time.time())
        await store.kv_release("cron:tick:2")
        assert await store.kv_get("cron:tick:2") == b"done"
        await store.kv_release("never-claimed")


async def check_durable_across_reopen(new_store: NewStore) -> None:
    t = time.time()
    async with new_store() as store:
        ids = await store.put(Q, [b"a", b"b", b"c"], meta={"source": "destination"})
        [held] = await store.lease(Q, now=t, limit=1, lease_s=30)
        await store.kv_set("state", b"v")
    async with new_store() as store:
        assert await store.depth(Q) == 3
        assert [e.id for e in await store.lease(Q, now=t + 1, limit=10, lease_s=300)] == ids[1:]
        # The lease held by the "dead" first store expires and the entry comes back.
        [back] = await store.lease(Q, now=t + 31, limit=10, lease_s=30)
        assert back.id == held.id
        assert back.meta == {"source": "destination"}
        assert await store.kv_get("state") == b"v"


async def check_two_instances_never_lease_twice(new_store: NewStore) -> None:
    total = 600
    async with new_store() as a, new_store() as b:
        ids = await a.put(Q, [str(i).encode() for i in range(total)])
        taken: list[str] = []
        now = time.time()

        async def drain(store: Store) -> None:
            while True:
                batch = await store.lease(Q, now=now, limit=7, lease_s=300)
                if not batch:
                    return
                taken.extend(e.id for e in batch)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for store in (a, b, a, b):
                tg.start_soon(drain, store)
        assert len(taken) == total
        assert sorted(taken) == sorted(ids)


async def check_caps_refuse_a_put_and_write_nothing(new_store: NewStore) -> None:
    limits = QueueLimits(max_depth=3, max_bytes=100)
    async with new_store(limits=limits) as store:
        await store.put(Q, [b"a" * 10, b"b" * 10])
        with pytest.raises(QueueFull) as depth_full:
            await store.put(Q, [b"c" * 10, b"d" * 10])  # 4 entries > 3
        assert (depth_full.value.queue, depth_full.value.what) == (Q, "depth")
        with pytest.raises(QueueFull) as bytes_full:
            await store.put(Q, [b"e" * 81])  # 101 bytes > 100
        assert (bytes_full.value.what, bytes_full.value.cap) == ("bytes", 100)
        assert "store.max_queue_bytes" in str(bytes_full.value)
        assert await store.usage(Q) == (2, 20)
        assert [e.payload for e in await store.peek(Q)] == [b"a" * 10, b"b" * 10]
        assert store.full.counts == {Q: 2}
        await store.put(Q, [b"f" * 80])  # exactly at both caps
        assert await store.usage(Q) == (3, 100)
        with pytest.raises(QueueFull):
            await store.put(Q, [b""])
        # room made: the queue takes puts again
        [first] = await store.lease(Q, now=time.time(), limit=1, lease_s=30)
        await store.ack(Q, [first.id])
        await store.put(Q, [b"g" * 10])
        assert await store.usage(Q) == (3, 100)
        # an empty queue takes any one put, so a batch over a cap is never stuck forever
        await store.put("local:big", [b"x" * 60, b"y" * 60, b"z", b"w"])
        assert await store.usage("local:big") == (4, 122)
    async with new_store(limits=limits) as again:  # the counters are durable and shared
        assert await again.usage(Q) == (3, 100)
        with pytest.raises(QueueFull):
            await again.put(Q, [b"h"])


async def check_usage_follows_every_removal(new_store: NewStore) -> None:
    async with new_store() as store:
        ids = await store.put("local:u", [b"1" * 5, b"2" * 7, b"3" * 11, b"4" * 13])
        assert await store.usage("local:u") == (4, 36)
        await store.ack("local:u", [ids[1], "no-such-id"])
        await store.ack("local:u", [ids[1]])  # twice: counted once
        assert await store.usage("local:u") == (3, 29)
        assert await store.trim("local:u", enqueued_before=0.0, keep=2) == 1
        assert await store.usage("local:u") == (2, 24)
        assert await store.purge("local:u") == 2
        assert await store.usage("local:u") == (0, 0)
        assert await store.usage("local:never") == (0, 0)


async def check_trim_by_age_then_by_depth(new_store: NewStore) -> None:
    clock = FakeClock(start=1_000_000.0)
    async with new_store(clock=clock) as store:
        old = await store.put("local:dlq", [b"old-1", b"old-2"])
        await store.put("local:other", [b"old-elsewhere"])
        await clock.advance(1000)
        young = await store.put("local:dlq", [b"young-1", b"young-2", b"young-3"])
        cutoff = 1_000_000.0 + 500
        assert await store.trim("local:dlq", enqueued_before=cutoff) == 2
        assert [e.id for e in await store.peek("local:dlq")] == young
        assert [await store.get("local:dlq", i) for i in old] == [None, None]
        assert await store.depth("local:other") == 1  # another queue is not touched
        assert await store.trim("local:dlq", enqueued_before=cutoff) == 0
        # beyond ``keep`` entries the oldest go
        assert await store.trim("local:dlq", enqueued_before=cutoff, keep=1) == 2
        assert [e.id for e in await store.peek("local:dlq")] == young[2:]
        assert await store.usage("local:dlq") == (1, 7)
        assert await store.trim("local:dlq", enqueued_before=cutoff, keep=5) == 0


CHECKS: list[Check] = [
    check_put_lease_ack_in_order,
    check_edge_cases,
    check_lease_hides_until_it_expires,
    check_retry_in_the_future,
    check_put_available_later,
    check_peek_get_depth_queues_purge,
    check_kv,
    check_durable_across_reopen,
    check_two_instances_never_lease_twice,
    check_caps_refuse_a_put_and_write_nothing,
    check_usage_follows_every_removal,
    check_trim_by_age_then_by_depth,
]
