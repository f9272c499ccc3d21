"""The redis_streams poller against a real redis-server (driven directly, no runtime)."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
import structlog

from eventrun.abc import Poller, Record, SourceSpec
from eventrun.exceptions import SourceAuthError, SourceUnavailable
from eventrun.sources.redis_streams import RedisStreamsPoller, create
from tests.fixtures.redis import RedisServer, persistent_args

pytestmark = pytest.mark.redis


def make_poller(url: str, **overrides: Any) -> RedisStreamsPoller:
    config: dict[str, Any] = {
        "streams": ["s1"],
        "group": "g",
        "starting_position": "0",
        "consumer": "c1",
        "batch_size": 100,
        "key_field": None,
        "claim_idle": None,
        "parallelization_factor": 1,
    }
    config.update(overrides)
    spec = SourceSpec(
        kind="redis_streams",
        name="fn/redis_streams[0]",
        function="fn",
        config=SimpleNamespace(**config),
        connection=SimpleNamespace(url=url),
    )
    poller = create(spec)
    assert isinstance(poller, Poller)
    assert isinstance(poller, RedisStreamsPoller)
    return poller


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield c
    finally:
        await c.aclose()


async def poll_n(poller: RedisStreamsPoller, n: int, max_records: int = 1000) -> list[Record]:
    """Poll until ``n`` records arrived (each empty poll blocks up to a second)."""
    out: list[Record] = []
    with anyio.fail_after(20):
        while len(out) < n:
            out.extend(await poller.poll(max_records))
    assert len(out) == n
    return out


async def add(client: aioredis.Redis, stream: str, count: int, **extra: str) -> list[str]:
    async with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            pipe.xadd(stream, {"data": json.dumps({"n": i}), **extra})
        return list(await pipe.execute())


async def test_order_per_stream_across_polls(redis_url: str, client: aioredis.Redis) -> None:
    ids = {"s1": [], "s2": []}
    for _ in range(40):
        for stream in ids:
            ids[stream] += await add(client, stream, 1)
    async with make_poller(redis_url, streams=["s1", "s2"]) as poller:
        records = await poll_n(poller, 80, max_records=7)
        assert await poller.poll(7) == []
    for stream, expected in ids.items():
        got = [r.item_id for r in records if r.shard == stream]
        assert got == expected
    assert all(r.attempt == 1 and r.plain_event()["redis"]["deliveryCount"] == 1 for r in records)


async def test_event_shape_field_by_field(
    redis_url: str, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    raw = aioredis.Redis.from_url(redis_url)
    try:
        several = await raw.xadd("orders", {"a": b"1", "b": b"\xff\x00"}, id="1700000000123-4")
        single = await raw.xadd("orders", {"data": b'{"order": 7}', "key": b"cust-7"})
    finally:
        await raw.aclose()
    async with make_poller(redis_url, streams=["orders"], key_field="key") as poller:
        second, first = await poll_n(poller, 2)
        sent = json.loads(msgspec.json.encode(poller.batch_event([second, first])))
        info = poller.batch_info([second, first])
    single_id = single.decode()
    location = redis_url.removeprefix("redis://")
    assert first.plain_event() == {
        "eventSource": "eventrun:redis-streams",
        "eventVersion": "1.0",
        "eventID": f"orders:{single_id}",
        "eventName": "eventrun:redis-streams:record",
        "awsRegion": "eu-west-3",
        "eventSourceARN": f"arn:eventrun:redis:{location}:stream/orders",
        "redis": {
            "redisSchemaVersion": "1.0",
            "stream": "orders",
            "id": single_id,
            "sequenceNumber": single_id,
            "partitionKey": "cust-7",
            "data": base64.b64encode(b'{"order": 7}').decode(),
            "approximateArrivalTimestamp": int(single_id.split("-")[0]) / 1000,
            "deliveryCount": 1,
            "fields": {"data": '{"order": 7}', "key": "cust-7"},
        },
    }
    assert (first.shard, first.key, first.item_id) == ("orders", "cust-7", single_id)
    assert (first.data, first.data_key, first.attempt) == (b'{"order": 7}', "data", 1)
    assert first.timestamp == int(single_id.split("-")[0]) / 1000
    # No data/body field: data is the JSON of all fields; non-UTF-8 values get a marker.
    assert several == b"1700000000123-4"
    fields = {"a": "1", "b": {"base64": base64.b64encode(b"\xff\x00").decode()}}
    assert second.plain_event()["redis"]["fields"] == fields
    assert json.loads(second.data) == fields
    assert base64.b64decode(second.plain_event()["redis"]["data"]) == second.data
    assert second.plain_event()["redis"]["partitionKey"] == ""
    assert second.key is None
    assert second.plain_event()["redis"]["approximateArrivalTimestamp"] == 1700000000.123
    assert sent == {"Records": [second.plain_event(), first.event]}  # what a batch carries
    assert list(sent["Records"][1]) == list(first.event)
    assert info["RedisStreamsBatchInfo"] == {
        "shardId": "orders",
        "startSequenceNumber": "1700000000123-4",
        "endSequenceNumber": single_id,
        "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.123Z",
        "approximateArrivalOfLastRecord": time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(first.timestamp)
        )
        + f".{int(single_id.split('-')[0]) % 1000:03d}Z",
        "batchSize": 2,
        "streamArn": f"arn:eventrun:redis:{location}:stream/orders",
    }


async def test_ack_prefix_then_same_consumer_rereads_only_unacked(
    redis_url: str, client: aioredis.Redis
) -> None:
    ids = await add(client, "s1", 10)
    async with make_poller(redis_url) as poller:
        records = await poll_n(poller, 10)
        await poller.ack(records[:4])
    assert (await client.xpending("s1", "g"))["pending"] == 6
    later = await add(client, "s1", 3)
    async with make_poller(redis_url) as poller:
        first = await poller.poll(100)
        # Own pending entries come first, alone, with their delivery counter.
        assert [r.item_id for r in first] == ids[4:]
        assert [r.attempt for r in first] == [2] * 6
        assert [r.plain_event()["redis"]["deliveryCount"] for r in first] == [2] * 6
        new = await poll_n(poller, 3)
        assert [r.item_id for r in new] == later
        assert [r.attempt for r in new] == [1, 1, 1]
        await poller.ack([*first, *new])
    assert (await client.xpending("s1", "g"))["pending"] == 0


async def test_release_leaves_pending_and_redelivers(
    redis_url: str, client: aioredis.Redis
) -> None:
    ids = await add(client, "s1", 5)
    async with make_poller(redis_url) as poller:
        records = await poll_n(poller, 5)
        await poller.ack(records[:2])
        await poller.release(records[2:], 0)
        await poller.flush()
        assert (await client.xpending("s1", "g"))["pending"] == 3
        again = await poll_n(poller, 3)
        assert [r.item_id for r in again] == ids[2:]
        assert [r.attempt for r in again] == [2, 2, 2]
        await poller.ack(again)
        assert await poller.poll(10) == []
    assert (await client.xpending("s1", "g"))["pending"] == 0


async def test_held_entries_are_not_reread_after_a_connection_error(
    redis_url: str, client: aioredis.Redis
) -> None:
    """A connection dropped during a blocking read makes the poller re-read its PEL, but
    entries it still holds are skipped (no duplicate inside one process)."""
    ids = await add(client, "s1", 6)
    async with make_poller(redis_url) as poller:
        held = await poll_n(poller, 3, max_records=3)
        rest = await poll_n(poller, 3, max_records=3)
        assert [r.item_id for r in [*held, *rest]] == ids

        async def blocked_poll() -> None:
            with pytest.raises(SourceUnavailable):
                await poller.poll(100)

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocked_poll)
            with anyio.fail_after(5):
                # The blocked state lives in the server: no event to wait on, so ask it.
                while all("b" not in c["flags"] for c in await client.client_list()):  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            await client.client_kill_filter(_type="normal", skipme=True)
        later = await add(client, "s1", 1)
        assert [r.item_id for r in await poll_n(poller, 1)] == later
        await poller.ack([*held, *rest])
        await poller.flush()
        assert (await client.xpending("s1", "g"))["pending"] == 1


async def test_claims_entries_of_a_dead_consumer_in_order(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.xgroup_create("s1", "g", "0", mkstream=True)
    ids = await add(client, "s1", 5)
    dead = await client.xreadgroup("g", "dead", {"s1": ">"}, count=5)
    assert [entry_id for entry_id, _ in dead[0][1]] == ids
    async with make_poller(redis_url, claim_idle=0.1, consumer="alive") as poller:
        claimed = await poll_n(poller, 5)
        assert [r.item_id for r in claimed] == ids
        assert [r.attempt for r in claimed] == [2] * 5
        detail = await client.xpending_range("s1", "g", "-", "+", 10)
        assert {row["consumer"] for row in detail} == {"alive"}
        # Held entries idle longer than claim_idle are not claimed back by ourselves.
        more = await add(client, "s1", 2)
        got = await poll_n(poller, 2)
        assert [r.item_id for r in got] == more
        # Each empty poll blocks ~1 s, so held entries go idle far beyond claim_idle.
        assert await poller.poll(100) == []
        assert await poller.poll(100) == []
        detail = await client.xpending_range("s1", "g", "-", "+", 10)
        assert [row["times_delivered"] for row in detail] == [2] * 5 + [1] * 2
        await poller.ack([*claimed, *got])
    assert (await client.xpending("s1", "g"))["pending"] == 0


@pytest.mark.parametrize(
    ("position", "expected"),
    [("$", "after"), ("0", "all"), ("id", "from_second"), ("TRIM_HORIZON", "all")],
)
async def test_starting_positions(
    redis_url: str, client: aioredis.Redis, position: str, expected: str
) -> None:
    before = await add(client, "s1", 3)
    start = before[0] if position == "id" else position
    async with make_poller(redis_url, starting_position=start) as poller:
        after = await add(client, "s1", 2)
        want = {"after": after, "all": before + after, "from_second": before[1:] + after}
        records = await poll_n(poller, len(want[expected]))
        assert [r.item_id for r in records] == want[expected]


async def test_reconnects_after_the_server_stops_and_starts(
    redis_url: str, redis_server: RedisServer
) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await add(client, "s1", 2)
    await client.aclose()
    async with make_poller(redis_url) as poller:
        before = await poll_n(poller, 2)
        await poller.ack(before)
        redis_server.stop()
        with pytest.raises(SourceUnavailable):
            await poller.poll(100)
        with pytest.raises(SourceUnavailable):
            await poller.poll(100)
        redis_server.start()  # empty again: the poller recreates its group
        fresh = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            with anyio.fail_after(20):
                while not await fresh.exists("s1"):
                    # The first command on a dead pooled connection may fail.
                    with contextlib.suppress(SourceUnavailable):
                        assert await poller.poll(100) == []
            assert [g["name"] for g in await fresh.xinfo_groups("s1")] == ["g"]
            ids = await add(fresh, "s1", 3)
            records = await poll_n(poller, 3)
            assert [r.item_id for r in records] == ids
            await poller.ack(records)
            await poller.flush()
            assert (await fresh.xpending("s1", "g"))["pending"] == 0
        finally:
            await fresh.aclose()


async def pending_count(url: str, stream: str) -> int:
    """XPENDING count through a fresh connection (pooled ones die with a restart)."""
    c = aioredis.Redis.from_url(url)
    try:
        return int((await c.xpending(stream, "g"))["pending"])
    finally:
        await c.aclose()


async def test_restart_with_persistence_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(extra_args=persistent_args(tmp_path))
    server.start()
    try:
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        ids = await add(client, "s1", 20)
        await client.aclose()
        async with make_poller(server.url) as poller:
            first = await poll_n(poller, 10, max_records=10)
            await poller.ack(first[:5])
            server.restart()
            with pytest.raises(SourceUnavailable):
                await poller.poll(100)
            rest = await poll_n(poller, 10)
            await poller.ack([*first[5:], *rest])
        assert [r.item_id for r in [*first, *rest]] == ids
        assert await pending_count(server.url, "s1") == 0
    finally:
        server.stop()


async def test_ack_while_down_is_applied_after_reconnect(tmp_path: Path) -> None:
    server = RedisServer(extra_args=persistent_args(tmp_path))
    server.start()
    try:
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        await add(client, "s1", 4)
        await client.aclose()
        async with make_poller(server.url) as poller:
            records = await poll_n(poller, 4)
            server.stop()
            await poller.ack(records)  # queued, never raised
            with pytest.raises(SourceUnavailable):
                await poller.flush()  # cannot go out now: the ids stay queued
            server.start()
            with anyio.fail_after(10):
                # The ack flusher retries on its own; no event to wait on, so ask Redis.
                while await pending_count(server.url, "s1"):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            with anyio.fail_after(10):
                while True:  # the first command on the dead pooled connection may fail
                    try:
                        assert await poller.poll(100) == []  # acked: not re-read
                        break
                    except SourceUnavailable:
                        pass
    finally:
        server.stop()


async def test_statistics(redis_url: str, client: aioredis.Redis) -> None:
    old_ms = int(time.time() * 1000) - 5000
    async with client.pipeline(transaction=False) as pipe:
        for i in range(10):
            pipe.xadd("s1", {"data": str(i)}, id=f"{old_ms}-{i}")
        await pipe.execute()
    async with make_poller(redis_url) as poller:
        assert await poll_n(poller, 10, max_records=4) != []
        await poller.refresh_statistics()
        stats = poller.statistics()
    # All 10 were delivered to the group and none acked: nothing lags, all pending.
    assert stats["pending.s1"] == stats["pending"] == 10
    assert stats["lag.s1"] == stats["lag"] == 0
    assert 4.5 < stats["oldest_pending_age_s.s1"] < 60
    await client.xadd("s1", {"data": "x"})
    async with make_poller(redis_url) as poller:
        await poller.refresh_statistics()
        assert poller.statistics()["lag.s1"] == 1


async def test_own_pending_entries_are_reread_a_page_at_a_time(
    redis_url: str, client: aioredis.Redis
) -> None:
    ids = await add(client, "s1", 5)
    async with make_poller(redis_url) as poller:
        await poll_n(poller, 5)  # delivered, never settled: left pending
    async with make_poller(redis_url) as poller:  # the same consumer, restarted
        pages = [await poller.poll(2) for _ in range(3)]
        assert [[r.item_id for r in page] for page in pages] == [ids[0:2], ids[2:4], ids[4:]]
        assert {r.attempt for page in pages for r in page} == {2}
        await poller.ack([r for page in pages for r in page])
        assert await poller.poll(2) == []
    assert (await client.xpending("s1", "g"))["pending"] == 0


async def test_pending_entry_deleted_meanwhile_is_acked_not_delivered(
    redis_url: str, client: aioredis.Redis
) -> None:
    ids = await add(client, "s1", 3)
    async with make_poller(redis_url) as poller:
        await poll_n(poller, 3)
    await client.xdel("s1", ids[1])
    async with make_poller(redis_url) as poller:
        again = await poller.poll(10)
        assert [r.item_id for r in again] == [ids[0], ids[2]]
        await poller.ack(again)
        await poller.flush()
    assert (await client.xpending("s1", "g"))["pending"] == 0


async def test_acks_for_a_stream_replaced_by_another_type_are_dropped(
    redis_url: str, client: aioredis.Redis
) -> None:
    await add(client, "s1", 2)
    async with make_poller(redis_url) as poller:
        records = await poll_n(poller, 2)
        await client.delete("s1")
        await client.set("s1", "not a stream")
        await poller.ack(records)
        await poller.flush()  # WRONGTYPE: nothing left to acknowledge, not an outage
        assert poller._reads.ack_backlog() == 0


async def test_group_cannot_be_created_on_a_key_of_another_type(
    redis_url: str, client: aioredis.Redis
) -> None:
    await client.set("s1", "not a stream")
    with pytest.raises(
        SourceUnavailable, match=r"cannot create group 'g' on stream 's1'.*WRONGTYPE"
    ):
        async with make_poller(redis_url):
            pass


async def test_server_error_while_reading_is_unavailable(
    redis_url: str, client: aioredis.Redis
) -> None:
    await add(client, "s1", 1)
    async with make_poller(redis_url) as poller:
        await poller.ack(await poll_n(poller, 1))
        await poller.flush()
        await client.delete("s1")
        await client.set("s1", "not a stream")
        with pytest.raises(SourceUnavailable, match="WRONGTYPE"):
            await poller.poll(10)


async def test_wrong_credentials_are_an_auth_error(redis_url: str) -> None:
    bad = redis_url.replace("redis://", "redis://nobody:wrong@")
    with pytest.raises(SourceAuthError, match="check the connection's credentials") as info:
        async with make_poller(bad):
            pass
    assert "wrong" not in str(info.value)  # the password is not echoed


async def test_poll_outside_async_with_is_a_programming_error(redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await make_poller(redis_url).poll(10)


async def test_acks_that_cannot_go_out_at_close_are_logged(
    redis_server: RedisServer, redis_url: str, client: aioredis.Redis
) -> None:
    await add(client, "s1", 2)
    with structlog.testing.capture_logs() as logs:
        async with make_poller(redis_url) as poller:
            records = await poll_n(poller, 2)
            redis_server.stop()
            await poller.ack(records)
    # The close tried the XACK once more and did not raise: the entries stay pending
    # (redelivered, not lost). The flusher task may have logged the same event first.
    deferred = [e for e in logs if e["event"] == "source.ack_deferred"]
    assert deferred
    assert all(e["source"] == "redis_streams" for e in deferred)
    closing = [e for e in deferred if "unavailable during XACK" not in e["error"]]
    assert len(closing) == 1  # the close logs the client's own error, untranslated


async def test_batch_info_of_no_records_is_empty(redis_url: str) -> None:
    async with make_poller(redis_url) as poller:
        assert poller.batch_info([]) == {}
