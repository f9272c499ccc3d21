"""The redis: sink against a real redis-server."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from eventrun.abc import OutMessage, Sink, SinkSpec, SourceSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun.sinks.redis import create
from eventrun.sources.redis_streams import create as create_source
from tests.fixtures._ports import free_port

pytestmark = pytest.mark.redis


def make_sink(url: str, target: str) -> Sink:
    spec = SinkSpec(
        url=f"redis:{target}", kind="redis", target=target, connection=SimpleNamespace(url=url)
    )
    sink = create(spec)
    assert isinstance(sink, Sink)
    return sink


async def test_round_trip_fields(redis_url: str) -> None:
    messages = [
        OutMessage(payload=b'{"n": 1}', key="k1", attributes={"origin": "fn"}),
        OutMessage(payload=b'{"n": 2}'),
    ]
    async with make_sink(redis_url, "main/out") as sink:
        await sink.send(messages)
        await sink.send([])
    client = aioredis.Redis.from_url(redis_url)
    try:
        entries = await client.xrange("out")
    finally:
        await client.aclose()
    assert [fields for _, fields in entries] == [
        {b"data": b'{"n": 1}', b"key": b"k1", b"origin": b"fn"},
        {b"data": b'{"n": 2}'},
    ]


async def test_sink_to_poller_round_trip(redis_url: str) -> None:
    async with make_sink(redis_url, "main/pipe") as sink:
        await sink.send([OutMessage(payload=b'{"n": %d}' % i, key=f"k{i}") for i in range(3)])
    config = SimpleNamespace(
        streams=["pipe"], group="g", starting_position="0", consumer="c", key_field="key"
    )
    spec = SourceSpec(
        kind="redis_streams",
        name="f/redis_streams[0]",
        function="f",
        config=config,
        connection=SimpleNamespace(url=redis_url),
    )
    async with create_source(spec) as poller:
        records = await poller.poll(10)
    assert [(r.data, r.key) for r in records] == [(b'{"n": %d}' % i, f"k{i}") for i in range(3)]


async def test_maxlen_trims_approximately(redis_url: str) -> None:
    async with make_sink(redis_url, "main/capped?maxlen=10") as sink:
        for _ in range(10):
            await sink.send([OutMessage(payload=b"x")] * 100)
    client = aioredis.Redis.from_url(redis_url)
    try:
        length = await client.xlen("capped")
        info = await client.xinfo_stream("capped")
    finally:
        await client.aclose()
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default).
    assert 10 <= length <= 200
    assert info["entries-added"] == 1000


def test_bad_targets_are_config_errors() -> None:
    for target in ("main/", "main/s?maxlen=0", "main/s?max=3"):
        with pytest.raises(ConfigError):
            make_sink("redis://127.0.0.1:1/0", target)


async def test_unavailable_when_nothing_listens() -> None:
    async with make_sink(f"redis://127.0.0.1:{free_port()}/0", "main/s") as sink:
        with pytest.raises(SinkUnavailable):
            await sink.send([OutMessage(payload=b"x")])


async def test_rejected_on_wrong_type(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set("plain", "string")
    finally:
        await client.aclose()
    async with make_sink(redis_url, "main/plain") as sink:
        with pytest.raises(SinkRejected, match="WRONGTYPE"):
            await sink.send([OutMessage(payload=b"x")])


async def test_send_outside_async_with_is_a_programming_error(redis_url: str) -> None:
    sink = make_sink(redis_url, "main/s")
    await sink.send([])  # nothing to send: fine anywhere
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await sink.send([OutMessage(payload=b"x")])
