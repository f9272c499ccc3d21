"""The ``kinesis:CONNECTION/STREAM`` sink against a real moto server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventrun.abc import OutMessage, Sink, SinkSpec
from eventrun.exceptions import SinkRejected
from eventrun.sinks.kinesis import KinesisSink, create
from tests.fixtures.moto import MotoServer
from tests.sources.kinesis._kit import create_stream

pytestmark = pytest.mark.kinesis


def sink(moto: MotoServer, stream: str) -> KinesisSink:
    return create(
        SinkSpec(
            url=f"kinesis:main/{stream}",
            kind="kinesis",
            target=f"main/{stream}",
            connection=moto.connection,
        )
    )


@pytest.fixture
async def kinesis(moto: MotoServer) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **moto.connection.client_kwargs()) as c:
        yield c


async def read_all(client: Any, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shard in (await client.list_shards(StreamName=stream))["Shards"]:
        it = (
            await client.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        answer = await client.get_records(ShardIterator=it, Limit=10000)
        records += answer["Records"]
    return records


async def test_every_message_lands_keyed_in_order_per_key(moto: MotoServer, kinesis: Any) -> None:
    stream = await create_stream(kinesis, 3)
    messages = [OutMessage(json.dumps({"i": i}).encode(), key=f"k{i % 7}") for i in range(1200)] + [
        OutMessage(b'{"i": "keyless"}')
    ]
    async with sink(moto, stream) as out:
        assert isinstance(out, Sink)
        await out.send(messages)
    records = await read_all(kinesis, stream)
    assert len(records) == 1201
    by_key: dict[str, list[int]] = {}
    for r in records:
        doc = json.loads(r["Data"])
        if doc["i"] == "keyless":
            assert len(r["PartitionKey"]) == 64  # the payload's hash
            continue
        assert r["PartitionKey"] == f"k{doc['i'] % 7}"
        by_key.setdefault(r["PartitionKey"], []).append(doc["i"])
    assert all(values == sorted(values) for values in by_key.values())
    assert sum(len(v) for v in by_key.values()) == 1200


async def test_a_missing_stream_is_rejected(moto: MotoServer) -> None:
    async with sink(moto, "no-such-stream") as out:
        with pytest.raises(SinkRejected, match="does not exist"):
            await out.send([OutMessage(b"{}", key="k")])


def test_target_needs_a_stream() -> None:
    with pytest.raises(SinkRejected, match="expected kinesis:CONNECTION/STREAM"):
        create(SinkSpec(url="kinesis:main", kind="kinesis", target="main"))
