"""The SQS poller against a real moto server: shapes, settling, visibility, FIFO, DLQ, chaos."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import structlog

from eventrun.abc import Poller, Record, SourceSpec
from eventrun.exceptions import SourceAuthError, SourceError, SourceUnavailable
from eventrun.sources.sqs import SqsPoller, create
from tests.fixtures.moto import MotoServer, Queue

pytestmark = pytest.mark.sqs

LAMBDA_KEYS = [
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfMessageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
]


@dataclass
class Trigger:
    """Duck-typed stand-in for the config's SQS trigger model."""

    queue_url: str | None = None
    queue_name: str | None = None
    visibility_timeout: float | None = None
    maximum_concurrency: int | None = None
    max_receive_count: int | None = None


def poller(moto: MotoServer, **config: Any) -> SqsPoller:
    spec = SourceSpec(
        kind="sqs",
        name="fn/sqs[0]",
        function="fn",
        config=Trigger(**config),
        connection=moto.connection,
    )
    return create(spec)


async def collect(
    p: SqsPoller, n: int, *, max_records: int = 100, timeout_s: float = 30
) -> list[Record]:
    """Poll until ``n`` records arrived (failing after ``timeout_s``)."""
    got: list[Record] = []
    with anyio.fail_after(timeout_s):
        while len(got) < n:
            got.extend(await p.poll(max_records))
    return got


async def send_all(client: Any, queue: Queue, bodies: Sequence[str], **extra: Any) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body, **extra}
            for i, body in enumerate(bodies[start : start + 10])
        ]
        response = await client.send_message_batch(QueueUrl=queue.url, Entries=entries)
        assert not response.get("Failed")


async def counts(client: Any, queue: Queue) -> tuple[int, int]:
    attrs = (
        await client.get_queue_attributes(
            QueueUrl=queue.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


async def test_standard_event_shape_field_by_field(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue()
    before_ms = int(time.time() * 1000) - 1000
    sent = await sqs_client.send_message(
        QueueUrl=queue.url,
        MessageBody='{"order": 7}',
        MessageAttributes={
            "Author": {"DataType": "String", "StringValue": "John Grisham"},
            "Count": {"DataType": "Number", "StringValue": "42"},
            "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffhi"},
        },
    )
    plain = await sqs_client.send_message(QueueUrl=queue.url, MessageBody="plain")
    async with poller(moto, queue_name=queue.name) as p:
        assert isinstance(p, Poller)
        assert p.ordered is False
        records = await collect(p, 2)
    after_ms = int(time.time() * 1000) + 1000
    by_id = {r.item_id: r for r in records}
    rec = by_id[sent["MessageId"]]
    event = rec.event
    assert list(event) == LAMBDA_KEYS
    assert event["messageId"] == sent["MessageId"]
    assert isinstance(event["receiptHandle"], str)
    assert event["receiptHandle"]
    assert event["body"] == '{"order": 7}'
    attrs = event["attributes"]
    assert list(attrs) == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ]
    assert all(isinstance(v, str) for v in attrs.values())
    assert attrs["ApproximateReceiveCount"] == "1"
    assert before_ms <= int(attrs["SentTimestamp"]) <= after_ms
    assert int(attrs["SentTimestamp"]) <= int(attrs["ApproximateFirstReceiveTimestamp"]) <= after_ms
    assert attrs["SenderId"]
    assert event["messageAttributes"] == {
        "Author": {
            "stringValue": "John Grisham",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "Count": {
            "stringValue": "42",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "Blob": {
            "binaryValue": "AP9oaQ==",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert event["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert event["md5OfBody"] == hashlib.md5(b'{"order": 7}').hexdigest()
    assert event["eventSource"] == "aws:sqs"
    assert event["eventSourceARN"] == queue.arn
    assert event["awsRegion"] == "us-east-1"
    # The Record around it.
    assert rec.shard == ""
    assert rec.key is None
    assert rec.data == b'{"order": 7}'
    assert rec.data_key == "body"
    assert rec.token == event["receiptHandle"]
    assert rec.attempt == 1
    assert rec.timestamp == int(attrs["SentTimestamp"]) / 1000
    assert rec.size == len(json.dumps(event, separators=(",", ":")).encode())
    # A message without attributes has no md5OfMessageAttributes (lambda-semantics §3.1).
    bare = by_id[plain["MessageId"]].event
    assert bare["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in bare
    assert [k for k in LAMBDA_KEYS if k != "md5OfMessageAttributes"] == list(bare)
    # Batch event and failure info.
    assert p.batch_event(records) == {"Records": [r.event for r in records]}
    assert p.batch_info(records) == {
        "SQSBatchInfo": {
            "queueArn": queue.arn,
            "messageIds": [r.item_id for r in records],
            "batchSize": 2,
        }
    }


async def test_fifo_event_shape_and_shard(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue(fifo=True)
    await sqs_client.send_message(
        QueueUrl=queue.url, MessageBody="a", MessageGroupId="g1", MessageDeduplicationId="d-a"
    )
    async with poller(moto, queue_url=queue.url) as p:
        assert p.fifo is True
        [rec] = await collect(p, 1)
    attrs = rec.event["attributes"]
    assert list(attrs) == [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
        "SequenceNumber",
        "MessageGroupId",
        "MessageDeduplicationId",
    ]
    assert attrs["MessageGroupId"] == "g1"
    assert attrs["MessageDeduplicationId"] == "d-a"
    assert attrs["SequenceNumber"].isdigit()
    assert rec.shard == "g1"
    assert rec.event["eventSourceARN"] == queue.arn
    assert rec.event["eventSource"] == "aws:sqs"


async def test_s3_notification_body_passes_through_unchanged(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    s3_event = json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-2",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b.txt", "size": 3}},
                }
            ]
        }
    )
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody=s3_event)
    async with poller(moto, queue_name=queue.name) as p:
        [rec] = await collect(p, 1)
    assert rec.event["body"] == s3_event
    assert rec.data == s3_event.encode()
    assert rec.event["eventSource"] == "aws:sqs"


async def test_concurrent_receives_and_ack_empties_the_queue(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    bodies = [f"m{i}" for i in range(150)]
    await send_all(sqs_client, queue, bodies)
    got: list[Record] = []
    biggest_poll = 0
    async with poller(moto, queue_name=queue.name, maximum_concurrency=5) as p:
        with anyio.fail_after(30):
            while len(got) < 150:
                batch = await p.poll(50)
                if not got:
                    first = p.statistics()  # refreshed concurrently with the first receives
                    # (moto counts visible and in-flight messages non-atomically)
                    assert 0 < first["queue_depth"] <= 150
                    assert 0 <= first["in_flight"] <= 150
                biggest_poll = max(biggest_poll, len(batch))
                got.extend(batch)
                await p.ack(batch)
        assert sorted(r.event["body"] for r in got) == sorted(bodies)
        assert len({r.item_id for r in got}) == 150
        assert biggest_poll > 10  # several ReceiveMessage calls per poll
        assert await p.poll(10) == []
        stats = p.statistics()
    assert await counts(sqs_client, queue) == (0, 0)
    assert {"queue_depth", "in_flight", "oldest_record_age_s"} <= set(stats)


async def test_release_with_delay_redelivers_later_with_higher_receive_count(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["later", "now"])
    async with poller(moto, queue_name=queue.name) as p:
        records = await collect(p, 2)
        by_body = {r.event["body"]: r for r in records}
        released_at = time.monotonic()
        await p.release([by_body["later"]], 3)
        await p.release([by_body["now"]], 0)
        [again] = await collect(p, 1)
        assert again.event["body"] == "now"
        assert again.attempt == 2
        [later] = await collect(p, 1, timeout_s=10)
        assert time.monotonic() - released_at >= 2.5
    assert later.event["body"] == "later"
    assert later.item_id == by_body["later"].item_id
    assert later.attempt == 2
    assert later.event["attributes"]["ApproximateReceiveCount"] == "2"
    assert later.token != by_body["later"].token


async def test_extend_keeps_a_message_invisible_past_its_visibility_timeout(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue(attributes={"VisibilityTimeout": "2"})
    await send_all(sqs_client, queue, ["extended", "left alone"])
    async with poller(moto, queue_name=queue.name) as p:
        assert p.visibility_timeout_s == 2
        assert p.heartbeat_interval_s == 1
        # one ReceiveMessage call: concurrent calls may both take a message from moto
        # (the poller keeps one copy), which would count a receive the test never saw
        records = await collect(p, 2, max_records=10)
        assert sorted((r.event["body"], r.attempt) for r in records) == [
            ("extended", 1),
            ("left alone", 1),
        ]
        extended = next(r for r in records if r.event["body"] == "extended")
        redelivered: list[Record] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # a heartbeat per poll: a poll long-polls at most a second when the queue
            # looks empty, well inside the 2 s timeout even on a busy machine
            await p.extend([extended], p.visibility_timeout_s)
            redelivered.extend(await p.poll(10))
        await p.ack([extended])
    # The message without heartbeat came back (every 2 s); the extended one never did.
    assert redelivered
    assert {r.event["body"] for r in redelivered} == {"left alone"}
    assert [r.attempt for r in redelivered] == list(range(2, 2 + len(redelivered)))


@pytest.mark.parametrize("max_records", [4, 30])
async def test_fifo_keeps_group_order_across_polls(
    moto: MotoServer, sqs_client: Any, max_records: int
) -> None:
    queue = moto.create_queue(fifo=True)
    groups = ["a", "b", "c"]
    for i in range(10):
        entries = [
            {
                "Id": g,
                "MessageBody": f"{g}{i}",
                "MessageGroupId": g,
                "MessageDeduplicationId": f"{g}{i}",
            }
            for g in groups
        ]
        await sqs_client.send_message_batch(QueueUrl=queue.url, Entries=entries)
    seen: dict[str, list[str]] = {g: [] for g in groups}
    async with poller(moto, queue_name=queue.name) as p:
        with anyio.fail_after(30):
            while sum(map(len, seen.values())) < 30:
                batch = await p.poll(max_records)
                for r in batch:
                    seen[r.shard].append(r.event["body"])
                await p.ack(batch)
    assert seen == {g: [f"{g}{i}" for i in range(10)] for g in groups}


async def test_fifo_failed_message_blocks_only_its_group(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue(fifo=True)

    async def send(group: str, body: str) -> None:
        await sqs_client.send_message(
            QueueUrl=queue.url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body
        )

    await send("bad", "bad1")
    await send("good", "good1")
    async with poller(moto, queue_name=queue.name) as p:
        first = await collect(p, 2)
        bad = [r for r in first if r.shard == "bad"]
        await p.release(bad, 3)
        await p.ack([r for r in first if r.shard == "good"])
        await send("bad", "bad2")
        await send("good", "good2")
        [next_good] = await collect(p, 1)
        assert next_good.event["body"] == "good2"
        await p.ack([next_good])
        # The "bad" group stays blocked until its released message is visible again,
        # and then comes back in order.
        bad_again = await collect(p, 2, timeout_s=15)
    assert [r.event["body"] for r in bad_again] == ["bad1", "bad2"]
    assert bad_again[0].attempt == 2


async def test_redrive_policy_moves_a_failing_message_to_the_dlq(
    moto: MotoServer, sqs_client: Any
) -> None:
    dlq = moto.create_queue(prefix="dlq")
    queue = moto.create_queue(dlq=dlq, max_receive_count=2)
    await sqs_client.send_message(QueueUrl=queue.url, MessageBody="poison")
    attempts = []
    async with poller(moto, queue_name=queue.name, max_receive_count=5) as p:
        assert p.max_receive_count == 5
        for _ in range(2):
            [rec] = await collect(p, 1)
            attempts.append(rec.attempt)
            await p.release([rec], 0)
        assert await p.poll(10) == []
    assert attempts == [1, 2]
    moved = await sqs_client.receive_message(QueueUrl=dlq.url, WaitTimeSeconds=1)
    assert [m["Body"] for m in moved["Messages"]] == ["poison"]


async def test_missing_queue_is_a_clear_source_error(moto: MotoServer) -> None:
    with pytest.raises(SourceError, match=r"'no-such-queue-x1' does not exist") as info:
        async with poller(moto, queue_name="no-such-queue-x1"):
            pass
    assert not isinstance(info.value, SourceUnavailable)
    url = f"{moto.endpoint_url}/123456789012/no-such-queue-x2"
    with pytest.raises(SourceError, match="does not exist"):
        async with poller(moto, queue_url=url):
            pass


async def test_server_down_is_unavailable_and_restart_recovers(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["before"])
    async with poller(moto, queue_name=queue.name) as p:
        [before] = await collect(p, 1)
        moto.stop()
        try:
            with anyio.fail_after(10):
                with pytest.raises(SourceUnavailable, match=queue.name):
                    await p.poll(10)
                with pytest.raises(SourceUnavailable):
                    await p.ack([before])
        finally:
            moto.start()
        moto.create_queue(name=queue.name)  # moto lost its state
        await sqs_client.send_message(QueueUrl=queue.url, MessageBody="after")
        [after] = await collect(p, 1)
        await p.ack([after])
    assert after.event["body"] == "after"
    assert await counts(sqs_client, queue) == (0, 0)


def test_error_classes_map_to_source_errors(moto: MotoServer) -> None:
    import aiohttp
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code: str, status: int) -> ClientError:
        response: Any = {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(response, "ReceiveMessage")

    p = poller(moto, queue_name="some-queue")
    cases = {
        "AccessDenied": (client_error("AccessDenied", 403), SourceAuthError),
        "InvalidClientTokenId": (client_error("InvalidClientTokenId", 403), SourceAuthError),
        "Throttling": (client_error("Throttling", 400), SourceUnavailable),
        "InternalError": (client_error("InternalError", 500), SourceUnavailable),
        "connect": (EndpointConnectionError(endpoint_url="http://x"), SourceUnavailable),
        "missing": (client_error("AWS.SimpleQueueService.NonExistentQueue", 400), SourceError),
        "rejected": (client_error("InvalidParameterValue", 400), SourceError),
        "no credentials": (NoCredentialsError(), SourceAuthError),
        "aiohttp": (aiohttp.ServerDisconnectedError(), SourceUnavailable),
    }
    for name, (exc, expected) in cases.items():
        translated = p._translate(exc, "ReceiveMessage")
        assert type(translated) is expected, name
        assert "some-queue" in str(translated), name
    # not a client-library error: passed through unchanged (a bug, not an outage)
    bug = KeyError("x")
    assert p._translate(bug, "ReceiveMessage") is bug


def no_aws_environment(monkeypatch: pytest.MonkeyPatch, *, keep: Sequence[str] = ()) -> None:
    """Remove the region and credentials the moto fixture put in the environment."""
    for key in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        if key not in keep:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no IMDS credential lookups


def poller_with(connection: Any, **config: Any) -> SqsPoller:
    return create(
        SourceSpec(
            kind="sqs",
            name="fn/sqs[0]",
            function="fn",
            config=Trigger(**config),
            connection=connection,
        )
    )


def test_a_trigger_without_a_queue_is_a_source_error(moto: MotoServer) -> None:
    with pytest.raises(SourceError, match="needs queue_url or queue_name"):
        poller(moto)


async def test_no_connection_uses_the_aws_environment(
    moto: MotoServer, sqs_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["from-env"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto.endpoint_url)
    monkeypatch.delenv("AWS_REGION")  # AWS_DEFAULT_REGION alone supplies the region
    async with poller_with(None, queue_name=queue.name) as p:
        [record] = await collect(p, 1)
        await p.ack([record])
    assert record.event["body"] == "from-env"
    assert record.event["awsRegion"] == "us-east-1"
    assert await counts(sqs_client, queue) == (0, 0)


async def test_plain_connection_object_supplies_region_and_credentials(
    moto: MotoServer, sqs_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["plain"])
    no_aws_environment(monkeypatch)
    connection = SimpleNamespace(
        region="us-east-1",
        endpoint_url=moto.endpoint_url,
        access_key_id="testing",
        secret_access_key=SecretStr("testing"),
        session_token="",  # empty: left out
    )
    async with poller_with(connection, queue_name=queue.name) as p:
        [record] = await collect(p, 1)
        await p.ack([record])
    assert record.event["body"] == "plain"


async def test_region_comes_from_an_aws_queue_url_else_a_clear_error(
    moto: MotoServer, sqs_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["by-url"])
    no_aws_environment(monkeypatch, keep=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    connection = SimpleNamespace(endpoint_url=moto.endpoint_url)
    aws_url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{queue.name}"
    async with poller_with(connection, queue_url=aws_url) as p:
        [record] = await collect(p, 1)
        await p.ack([record])
    assert record.event["body"] == "by-url"
    assert record.event["awsRegion"] == "us-east-1"
    with pytest.raises(SourceError, match="no AWS region: set the connection's region"):
        async with poller_with(connection, queue_name=queue.name):
            pass


async def test_no_credentials_is_an_auth_error(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = moto.create_queue()
    no_aws_environment(monkeypatch, keep=("AWS_REGION",))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto.endpoint_url)
    with anyio.fail_after(30), pytest.raises(SourceAuthError, match="access denied"):
        async with poller_with(None, queue_name=queue.name):
            pass


async def test_use_outside_async_with_is_unavailable(moto: MotoServer) -> None:
    p = poller(moto, queue_name="never-opened")
    with pytest.raises(SourceUnavailable, match="outside 'async with'"):
        await p.poll(10)
    with pytest.raises(SourceUnavailable, match="outside 'async with'"):
        await p.ack([])


async def test_settling_a_message_the_queue_lost_is_logged_not_raised(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    await send_all(sqs_client, queue, ["a", "b"])
    async with poller(moto, queue_name=queue.name) as p:
        records = await collect(p, 2)
        await sqs_client.purge_queue(QueueUrl=queue.url)  # the receipt handles die with it
        with structlog.testing.capture_logs() as logs:
            await p.ack(records)
            await p.extend(records, 60)
    rejected = [e for e in logs if e["event"] == "sqs.settle_entry_rejected"]
    assert [(e["action"], e["code"]) for e in rejected] == [
        ("DeleteMessageBatch", "ReceiptHandleIsInvalid"),
        ("DeleteMessageBatch", "ReceiptHandleIsInvalid"),
        ("ChangeMessageVisibilityBatch (extend)", "ReceiptHandleIsInvalid"),
        ("ChangeMessageVisibilityBatch (extend)", "ReceiptHandleIsInvalid"),
    ]
    assert all(e["queue"] == queue.url for e in rejected)
