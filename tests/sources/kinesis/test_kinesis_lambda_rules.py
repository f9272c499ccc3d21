"""Lambda's stream rules end to end on moto's server through the real runtime in-process:
``maximum_record_age`` (a poison record retried until it is older than the limit, then
to on_failure) and aws-lambda-powertools' Kinesis / DynamoDB batch processors run
unchanged with ``report_batch_item_failures``."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests._runtime_kit import running_app
from tests.fixtures.moto import MotoServer
from tests.sources.kinesis._kit import (
    app,
    client_kwargs,
    create_stream,
    docs,
    put,
    read_jsonl,
    until,
    wait_ids,
)

pytestmark = pytest.mark.kinesis


@pytest.fixture
async def kinesis(moto: MotoServer) -> Any:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **client_kwargs(moto)) as client:
        yield client


@pytest.fixture(params=["moto", "kinesalite"])
def server(request: pytest.FixtureRequest) -> Any:
    """The Kinesis implementation a test runs against: moto's server, then kinesalite."""
    return request.getfixturevalue(request.param)


@pytest.fixture
async def server_kinesis(server: Any) -> Any:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **client_kwargs(server)) as client:
        yield client


async def _shard_of(kinesis: Any, stream: str, key: str) -> str:
    """The shard Kinesis puts ``key`` on: MD5 of the partition key within a hash range."""
    point = int(hashlib.md5(key.encode()).hexdigest(), 16)
    for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
        low, high = shard["HashKeyRange"]["StartingHashKey"], shard["HashKeyRange"]["EndingHashKey"]
        if int(low) <= point <= int(high):
            return str(shard["ShardId"])
    raise AssertionError(f"no shard holds key {key}")


def _utc(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(200)
async def test_maximum_record_age_sends_an_always_failing_record_to_on_failure(
    tmp_path: Path, server: Any, server_kinesis: Any
) -> None:
    """Lambda's minimum age is 60 s and neither moto nor kinesalite can back-date arrival
    times, so this waits for it (on each): the poison record is retried (no retry limit)
    until older than 60 s, then goes to on_failure as ``RecordAgeExceeded`` with its
    KinesisBatchInfo; the records that arrived with it and waited behind it on its shard
    are as old and follow it there. Its batch-mates before it (bisected out), the other
    shard (while this one is blocked) and records arriving after it expired are handled,
    once each."""
    kinesis, moto = server_kinesis, server
    stream = await create_stream(kinesis, 2)
    first = docs(20, keys=4)
    poison = first[9]
    poison["poison"] = True
    poisoned = await _shard_of(kinesis, stream, poison["key"])
    shard_of = {d["id"]: await _shard_of(kinesis, stream, d["key"]) for d in docs(60, keys=4)}
    expiring = {poison["id"]} | {d["id"] for d in first[10:] if shard_of[d["id"]] == poisoned}
    meanwhile = [d for d in docs(20, keys=4, start=20) if shard_of[d["id"]] != poisoned]
    after = docs(20, keys=4, start=40)
    assert len(expiring) > 1
    assert meanwhile
    failed = tmp_path / "failed.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 10, bisect_batch_on_function_error: true, "
        "maximum_record_age: 60s, poll_interval: 200ms",
        on_failure=f"file:{failed}",
    )
    ledger = tmp_path / "ledger.jsonl"

    def failed_ids() -> set[str]:
        return {_doc(r)["id"] for line in read_jsonl(failed) for r in line["payload"]["Records"]}

    async with running_app(config):
        await put(kinesis, stream, first)
        await wait_ids(ledger, {d["id"] for d in first} - expiring, 30)
        await put(kinesis, stream, meanwhile)
        await wait_ids(ledger, {d["id"] for d in meanwhile}, 30)
        assert not read_jsonl(failed), "the other shard went on while the poison was retried"
        await until(lambda: failed_ids() >= expiring, 150, "the expired records")
        await put(kinesis, stream, after)
        lines = await wait_ids(ledger, {d["id"] for d in after}, 30)
    counts = Counter(line["id"] for line in lines)
    assert set(counts) == {d["id"] for d in first + meanwhile + after} - expiring
    assert max(counts.values()) == 1
    records = read_jsonl(failed)
    assert failed_ids() == expiring
    assert {r["requestContext"]["condition"] for r in records} == {"RecordAgeExceeded"}
    [record] = [r for r in records if _doc(r["payload"]["Records"][0])["id"] == poison["id"]]
    assert record["requestContext"]["approximateInvokeCount"] >= 2
    [event_record] = record["payload"]["Records"]
    info = record["KinesisBatchInfo"]
    sn = event_record["kinesis"]["sequenceNumber"]
    assert info["shardId"] == poisoned
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == sn
    assert info["batchSize"] == 1
    assert info["streamArn"].endswith(f":stream/{stream}")
    for r in records:
        age = _utc(r["timestamp"]) - _utc(r["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"])
        assert 60 < age < 120, age


def _doc(record: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(record["kinesis"]["data"])))


async def test_powertools_kinesis_batch_processor_unchanged(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """BatchProcessor(EventType.KinesisDataStreams) + process_partial_response: a record
    failing once is reported by sequence number; the batch resumes from it (the records
    after it come again, those before it do not) and nothing reaches on_failure."""
    stream = await create_stream(kinesis, 1)
    items = docs(30, keys=3)
    items[15]["fail_once"] = True
    marks, events, failed = tmp_path / "marks", tmp_path / "events.jsonl", tmp_path / "f.jsonl"
    marks.mkdir()
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 10, report_batch_item_failures: true, "
        "maximum_retry_attempts: 2, poll_interval: 100ms",
        handler="ledger:pt_kinesis",
        environment={"EVENTS": str(events), "MARKS": str(marks)},
        on_failure=f"file:{failed}",
    )
    async with running_app(config):
        await put(kinesis, stream, items)
        lines = await wait_ids(tmp_path / "ledger.jsonl", {d["id"] for d in items})
    batches = [
        [json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in e["Records"]]
        for e in read_jsonl(events)
    ]
    _check_resumed_from(lines, batches, items[15]["id"])
    assert not failed.exists()


async def test_powertools_dynamodb_batch_processor_unchanged(
    tmp_path: Path, moto: MotoServer
) -> None:
    """BatchProcessor(EventType.DynamoDBStreams): the same on item writes."""
    from aiobotocore.session import get_session

    table = f"p-{tmp_path.name[-12:]}".replace("_", "-")
    marks, events, failed = tmp_path / "marks", tmp_path / "events.jsonl", tmp_path / "f.jsonl"
    marks.mkdir()
    ids = [f"i{n:02d}" for n in range(12)]
    async with get_session().create_client("dynamodb", **client_kwargs(moto)) as ddb:
        described = await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        for n, ident in enumerate(ids):  # written before the poller starts: one batch
            item = {"id": {"S": ident}, **({"fail_once": {"BOOL": True}} if n == 6 else {})}
            await ddb.put_item(TableName=table, Item=item)
        config = app(
            tmp_path,
            moto,
            f"stream: '{described['TableDescription']['LatestStreamArn']}', batch_size: 12, "
            "report_batch_item_failures: true, maximum_retry_attempts: 2, poll_interval: 100ms",
            kind="dynamodb_streams",
            handler="ledger:pt_ddb",
            environment={"EVENTS": str(events), "MARKS": str(marks)},
            on_failure=f"file:{failed}",
        )
        async with running_app(config):
            lines = await wait_ids(tmp_path / "ledger.jsonl", set(ids))
    batches = [
        [r["dynamodb"]["NewImage"]["id"]["S"] for r in e["Records"]] for e in read_jsonl(events)
    ]
    _check_resumed_from(lines, batches, ids[6])
    assert not failed.exists()


def _check_resumed_from(
    lines: list[dict[str, Any]], batches: list[list[str]], failing: str
) -> None:
    counts = Counter(line["id"] for line in lines)
    assert counts[failing] == 1, "handled once: after its reported failure"
    failed_in = next(b for b in batches if failing in b)
    retry = batches[batches.index(failed_in) + 1]
    assert retry[0] == failing, "retried from the failed record on"
    at = failed_in.index(failing)
    assert all(counts[i] == 1 for i in failed_in[:at]), "records before it acked"
    assert {i for i, n in counts.items() if n > 1} == set(failed_in[at + 1 :])
