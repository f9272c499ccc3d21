"""Kinesis end to end: moto's server, the real runtime in-process, worker processes, and a
ledger of what the handlers saw (tests/sources/kinesis/_kit.py)."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests._runtime_kit import running_app
from tests.fixtures.moto import MotoServer
from tests.sources.kinesis._kit import (
    app,
    client_kwargs,
    create_stream,
    docs,
    order_violations,
    put,
    read_jsonl,
    until,
    wait_ids,
    wait_lines,
)

pytestmark = pytest.mark.kinesis


@pytest.fixture(params=["moto", "kinesalite"])
def server(request: pytest.FixtureRequest) -> Any:
    """The Kinesis implementation a test runs against: each test that takes ``server``
    runs on moto's server and on kinesalite."""
    return request.getfixturevalue(request.param)


@pytest.fixture
async def kinesis(moto: MotoServer) -> Any:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **client_kwargs(moto)) as client:
        yield client


@pytest.fixture
async def server_kinesis(server: Any) -> Any:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **client_kwargs(server)) as client:
        yield client


@pytest.mark.timeout(240)
@pytest.mark.parametrize("factor", [1, 10])
async def test_every_record_once_in_order_per_shard_and_key(
    tmp_path: Path, server: Any, server_kinesis: Any, factor: int
) -> None:
    kinesis, moto = server_kinesis, server
    stream = await create_stream(kinesis, 4)
    items = docs(10_000, keys=40)
    await put(kinesis, stream, items[:1000])
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 100, parallelization_factor: {factor}, "
        "poll_interval: 200ms, shard_lease: 2s",
        environment={"EVENTS": str(tmp_path / "events.jsonl")},
    )
    async with running_app(config) as runtime:
        await put(kinesis, stream, items[1000:])
        lines = await wait_ids(tmp_path / "ledger.jsonl", {d["id"] for d in items}, 180)
        stats = runtime.statistics()["sources"]["fn/kinesis[0]"]
    counts = Counter(line["id"] for line in lines)
    assert len(counts) == 10_000
    assert max(counts.values()) == 1, "no failure, no restart: nothing twice"
    shard_bad, key_bad = order_violations(lines)
    assert key_bad == 0
    if factor == 1:
        assert shard_bad == 0
    assert len({line["shard"] for line in lines}) == 4
    assert stats["source"]["shards_held"] == 4
    assert "iterator_age_s.shardId-000000000000" in stats["source"]
    events = read_jsonl(tmp_path / "events.jsonl")
    assert all(len({r["eventID"].split(":")[0] for r in e["Records"]}) == 1 for e in events)
    _check_event_shape(events[0], stream)


def _check_event_shape(event: dict[str, Any], stream: str) -> None:
    from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent
    from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamModel

    record = event["Records"][0]
    assert list(record) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    assert list(record["kinesis"]) == [
        "kinesisSchemaVersion",
        "partitionKey",
        "sequenceNumber",
        "data",
        "approximateArrivalTimestamp",
    ]
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventName"] == "aws:kinesis:record"
    assert record["eventSourceARN"].startswith("arn:aws:kinesis:us-east-1:")
    assert record["eventSourceARN"].endswith(f":stream/{stream}")
    shard = record["eventID"].split(":")[0]
    assert record["eventID"] == f"{shard}:{record['kinesis']['sequenceNumber']}"
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)
    doc = json.loads(base64.b64decode(record["kinesis"]["data"]))
    assert doc["key"] == record["kinesis"]["partitionKey"]
    parsed = KinesisDataStreamModel.model_validate(event)
    assert parsed.Records[0].kinesis.data == base64.b64decode(record["kinesis"]["data"])
    data_class = KinesisStreamEvent(event)
    first = next(iter(data_class.records))
    assert first.kinesis.data_as_json() == doc


async def test_poison_record_bisected_to_on_failure(
    tmp_path: Path, server: Any, server_kinesis: Any
) -> None:
    kinesis, moto = server_kinesis, server
    stream = await create_stream(kinesis, 1)
    items = docs(40, keys=5)
    items[17]["poison"] = True
    await put(kinesis, stream, items)
    failed = tmp_path / "failed.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 20, bisect_batch_on_function_error: true, "
        "maximum_retry_attempts: 1, poll_interval: 200ms",
        on_failure=f"file:{failed}",
    )
    good = {d["id"] for d in items if not d.get("poison")}
    async with running_app(config):
        lines = await wait_ids(tmp_path / "ledger.jsonl", good)
        [record] = await wait_lines(failed, 1)
    assert {line["id"] for line in lines} == good
    info = record["KinesisBatchInfo"]
    poison_sn = json.loads(base64.b64decode(record["payload"]["Records"][0]["kinesis"]["data"]))
    assert poison_sn["id"] == items[17]["id"]
    sn = record["payload"]["Records"][0]["kinesis"]["sequenceNumber"]
    assert info["shardId"] == "shardId-000000000000"
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == sn
    assert info["batchSize"] == 1
    assert info["streamArn"].endswith(f":stream/{stream}")
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert len(info["approximateArrivalOfFirstRecord"]) == len("2019-11-14T00:38:04.835Z")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] >= 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert set(record) >= {"requestContext", "responseContext", "version", "timestamp"}


async def test_reshard_parent_read_before_children(
    tmp_path: Path, server: Any, server_kinesis: Any
) -> None:
    """A split mid-run: every key's records in the parent are handled before its records
    in the children, and the children are read (discovered while running)."""
    kinesis, moto = server_kinesis, server
    stream = await create_stream(kinesis, 1)
    before = docs(600, keys=20)
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 50, poll_interval: 200ms, shard_lease: 2s",
        environment={"SLOW": "0.05"},
    )
    async with running_app(config):
        await put(kinesis, stream, before)
        shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
        parent = shards[0]
        middle = int(parent["HashKeyRange"]["EndingHashKey"]) // 2
        await kinesis.split_shard(
            StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(middle)
        )
        after = docs(600, keys=20, start=600)
        await put(kinesis, stream, after)
        lines = await wait_ids(tmp_path / "ledger.jsonl", {d["id"] for d in before + after})
    by_shard = Counter(line["shard"] for line in lines)
    assert by_shard[parent["ShardId"]] == 600
    assert len(by_shard) == 3, by_shard
    _shard_bad, key_bad = order_violations(lines)
    assert key_bad == 0
    first_child = min(i for i, line in enumerate(lines) if line["shard"] != parent["ShardId"])
    last_parent = max(i for i, line in enumerate(lines) if line["shard"] == parent["ShardId"])
    assert last_parent < first_child


async def test_dynamodb_stream_events_from_item_writes(tmp_path: Path, moto: MotoServer) -> None:
    from aiobotocore.session import get_session
    from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
    from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel

    table = f"t-{tmp_path.name[-12:]}".replace("_", "-")
    session = get_session()
    async with session.create_client("dynamodb", **client_kwargs(moto)) as ddb:
        await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        events = tmp_path / "events.jsonl"
        config = app(
            tmp_path,
            moto,
            f"table: {table}, batch_size: 10, poll_interval: 100ms",
            kind="dynamodb_streams",
            handler="ledger:ddb",
            environment={"EVENTS": str(events)},
        )
        async with running_app(config):
            await ddb.put_item(
                TableName=table, Item={"id": {"S": "a"}, "n": {"N": "1"}, "b": {"B": b"\x00\x01"}}
            )
            await ddb.update_item(
                TableName=table,
                Key={"id": {"S": "a"}},
                UpdateExpression="SET n = :n",
                ExpressionAttributeValues={":n": {"N": "2"}},
            )
            await ddb.delete_item(TableName=table, Key={"id": {"S": "a"}})
            deadline = anyio.current_time() + 30
            records: list[dict[str, Any]] = []
            while len(records) < 3:
                assert anyio.current_time() < deadline, records
                records = [r for e in read_jsonl(events) for r in e["Records"]]
                await anyio.sleep(0.1)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert insert["Keys"] == {"id": {"S": "a"}}
    assert insert["NewImage"] == {"id": {"S": "a"}, "n": {"N": "1"}, "b": {"B": "AAE="}}
    assert "OldImage" not in insert
    assert modify["OldImage"]["n"] == {"N": "1"}
    assert modify["NewImage"]["n"] == {"N": "2"}
    assert remove["OldImage"]["n"] == {"N": "2"}
    assert "NewImage" not in remove
    assert all(r["eventSource"] == "aws:dynamodb" for r in records)
    assert all(f":table/{table}/stream/" in r["eventSourceARN"] for r in records)
    assert all(isinstance(d["ApproximateCreationDateTime"], float) for d in (insert, modify))
    assert insert["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert int(insert["SequenceNumber"]) < int(modify["SequenceNumber"])
    event = {"Records": records}
    DynamoDBStreamModel.model_validate(event)
    parsed = list(DynamoDBStreamEvent(event).records)
    assert parsed[1].dynamodb is not None
    assert parsed[1].dynamodb.new_image["n"] == 2


async def test_tumbling_windows_carry_state_across_invocations_and_a_restart(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """Each window's final invocation gets the ids every earlier invocation of the window
    put in the state, a restart in the middle included: every record in exactly one
    window, the one of its arrival time."""
    stream = await create_stream(kinesis, 2)
    windows = tmp_path / "windows.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 5, tumbling_window: 3s, poll_interval: 100ms",
        handler="ledger:window",
        environment={"WINDOWS": str(windows)},
    )
    first, second = docs(40, keys=8), docs(40, keys=8, start=40)
    async with running_app(config):
        await put(kinesis, stream, first)
        await until(lambda: len(read_jsonl(tmp_path / "ledger.jsonl")) >= 4, 30, "invocations")
    # stopped in the middle of a window (3 s): its state is in the store
    async with running_app(config):
        await put(kinesis, stream, second)
        everything = {d["id"] for d in first + second}

        def all_final() -> bool:
            return {i for w in read_jsonl(windows) for i in w["ids"]} >= everything

        await until(all_final, 60, "every record in a final window")
    finals = read_jsonl(windows)
    seen = [i for w in finals for i in w["ids"]]
    assert sorted(seen) == sorted(everything), "each record in exactly one window"
    assert all(w["records"] == 0 for w in finals)
    assert all(w["arn"].endswith(f":stream/{stream}") for w in finals)
    per_shard: dict[str, list[str]] = {}
    for w in finals:
        per_shard.setdefault(w["shard"], []).append(w["window"]["start"])
    for starts in per_shard.values():
        assert starts == sorted(starts)
        assert len(set(starts)) == len(starts)
    calls = read_jsonl(tmp_path / "ledger.jsonl")
    assert any(c["had"] > 0 for c in calls), "state carried to a later invocation"
    assert all(not c["early"] for c in calls)
    for w in finals:
        start = datetime.fromisoformat(w["window"]["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(w["window"]["end"].replace("Z", "+00:00"))
        assert (end - start).total_seconds() == 3


async def test_partial_batch_failure_resumes_from_the_failed_sequence_number(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """Lambda: checkpoint before the lowest reported sequence number and retry from it,
    so later records of that batch come again; nothing before it does."""
    stream = await create_stream(kinesis, 1)
    items = docs(30, keys=3)
    items[15]["fail_once"] = True
    marks = tmp_path / "marks"
    marks.mkdir()
    events = tmp_path / "events.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 10, report_batch_item_failures: true, poll_interval: 100ms",
        handler="ledger:partial",
        environment={"EVENTS": str(events), "MARKS": str(marks)},
    )
    async with running_app(config):
        await put(kinesis, stream, items)
        lines = await wait_ids(tmp_path / "ledger.jsonl", {d["id"] for d in items})
    counts = Counter(line["id"] for line in lines)
    assert counts[items[15]["id"]] == 1
    again = {i for i, n in counts.items() if n > 1}
    assert again <= {d["id"] for d in items[16:25]}
    batches = [
        [json.loads(base64.b64decode(r["kinesis"]["data"]))["id"] for r in e["Records"]]
        for e in read_jsonl(events)
    ]
    failed_in = next(b for b in batches if items[15]["id"] in b)
    retry = batches[batches.index(failed_in) + 1]
    assert retry[0] == items[15]["id"], "retried from the failed record on"
    assert again == set(failed_in[failed_in.index(items[15]["id"]) + 1 :])


async def test_pipeline_from_stream_to_stream(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """on_success: kinesis:main/OUT publishes each output keyed like its input."""
    source, target = await create_stream(kinesis, 2), await create_stream(kinesis, 1)
    items = docs(60, keys=6)
    config = app(
        tmp_path,
        moto,
        f"stream: {source}, poll_interval: 100ms",
        handler="ledger:echo",
        on_success=f"kinesis:main/{target}",
    )
    async with running_app(config):
        await put(kinesis, source, items)
        shard = (await kinesis.list_shards(StreamName=target))["Shards"][0]["ShardId"]
        it = (
            await kinesis.get_shard_iterator(
                StreamName=target, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        out: list[dict[str, Any]] = []
        deadline = anyio.current_time() + 30
        while len(out) < 60:
            assert anyio.current_time() < deadline, len(out)
            answer = await kinesis.get_records(ShardIterator=it)
            out += answer["Records"]
            it = answer["NextShardIterator"]
            await anyio.sleep(0.1)
    keys = {d["id"]: d["key"] for d in items}
    assert sorted(json.loads(r["Data"])["id"] for r in out) == sorted(keys)
    assert all(r["PartitionKey"] == keys[json.loads(r["Data"])["id"]] for r in out)


async def test_latest_skips_what_came_before(
    tmp_path: Path, server: Any, server_kinesis: Any
) -> None:
    await _starting_position(tmp_path, server, server_kinesis, "LATEST")


async def test_at_timestamp_skips_what_came_before(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """moto only: kinesalite 3.3.3 answers GetShardIterator(AT_TIMESTAMP) after a read
    timeout at first (the poller retries it on its next lease tick, a minute later)."""
    await _starting_position(tmp_path, moto, kinesis, "AT_TIMESTAMP")


async def _starting_position(tmp_path: Path, server: Any, kinesis: Any, position: str) -> None:
    stream = await create_stream(kinesis, 2)
    before, after = docs(40, keys=4), docs(40, keys=4, start=40)
    await put(kinesis, stream, before)
    await anyio.sleep(1.1)  # a gap in arrival times (not a wait for something to happen)
    cut = time.time()
    await anyio.sleep(1.1)
    extra = f", starting_position_timestamp: {cut}" if position == "AT_TIMESTAMP" else ""
    config = app(
        tmp_path,
        server,
        f"stream: {stream}, starting_position: {position}{extra}, poll_interval: 100ms",
    )
    async with running_app(config) as runtime:
        await runtime.ready.wait()  # the shards' iterators are got: LATEST is now
        await put(kinesis, stream, after)
        lines = await wait_ids(tmp_path / "ledger.jsonl", {d["id"] for d in after})
    assert {line["id"] for line in lines} == {d["id"] for d in after}


async def test_dynamodb_failure_record(tmp_path: Path, moto: MotoServer) -> None:
    """A failing DynamoDB batch goes to on_failure with DDBStreamBatchInfo."""
    from aiobotocore.session import get_session

    table = f"f-{tmp_path.name[-12:]}".replace("_", "-")
    failed = tmp_path / "failed.jsonl"
    async with get_session().create_client("dynamodb", **client_kwargs(moto)) as ddb:
        described = await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        )
        arn = described["TableDescription"]["LatestStreamArn"]
        config = app(
            tmp_path,
            moto,
            f"stream: '{arn}', batch_size: 10, maximum_retry_attempts: 0, poll_interval: 100ms",
            kind="dynamodb_streams",
            handler="ledger:ddb_fail",
            on_failure=f"file:{failed}",
        )
        async with running_app(config) as runtime:
            await runtime.ready.wait()
            for i in range(3):
                await ddb.put_item(TableName=table, Item={"id": {"S": f"k{i}"}})
            records = await wait_lines(failed, 1)
    info = records[0]["DDBStreamBatchInfo"]
    assert info["streamArn"] == arn
    assert info["shardId"].startswith("shardId-")
    assert int(info["startSequenceNumber"]) <= int(info["endSequenceNumber"])
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert len(info["approximateArrivalOfFirstRecord"]) == len("2019-11-14T00:13:19Z")
    assert records[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert records[0]["requestContext"]["approximateInvokeCount"] == 1
    handled = sum(r["DDBStreamBatchInfo"]["batchSize"] for r in records)
    assert handled <= 3
