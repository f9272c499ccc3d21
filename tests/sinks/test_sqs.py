"""The ``sqs:CONNECTION/QUEUE`` sink against a real moto server."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from eventrun.abc import OutMessage, Sink, SinkSpec
from eventrun.exceptions import SinkRejected, SinkUnavailable
from eventrun.sinks.sqs import SqsSink, create
from tests.fixtures.moto import MotoServer, Queue

pytestmark = pytest.mark.sqs


def sink(moto: MotoServer, queue: str) -> SqsSink:
    return create(
        SinkSpec(
            url=f"sqs:main/{queue}",
            kind="sqs",
            target=f"main/{queue}",
            connection=moto.connection,
        )
    )


async def receive_all(client: Any, queue: Queue, n: int) -> list[dict[str, Any]]:
    """Receive and delete ``n`` messages in arrival order."""
    got: list[dict[str, Any]] = []
    with anyio.fail_after(30):
        while len(got) < n:
            response = await client.receive_message(
                QueueUrl=queue.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            got.extend(messages)
            if messages:
                await client.delete_message_batch(
                    QueueUrl=queue.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
    return got


async def depth(client: Any, queue: Queue) -> int:
    attrs = await client.get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


async def test_standard_round_trip_with_attributes(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue()
    messages = [
        OutMessage(payload=json.dumps({"n": i}).encode(), key=f"k{i}", attributes={"src": "t"})
        for i in range(25)
    ]
    async with sink(moto, queue.name) as s:
        assert isinstance(s, Sink)
        await s.send(messages)
    got = await receive_all(sqs_client, queue, 25)
    assert sorted(json.loads(m["Body"])["n"] for m in got) == list(range(25))
    assert all(
        m["MessageAttributes"] == {"src": {"DataType": "String", "StringValue": "t"}} for m in got
    )


async def test_fifo_round_trip_groups_by_key_and_deduplicates(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue(fifo=True)
    messages = [
        OutMessage(payload=json.dumps({"key": key, "i": i}).encode(), key=key)
        for i in range(5)
        for key in ("alpha", "beta", None)
    ]
    async with sink(moto, queue.url) as s:
        await s.send(messages)
        await s.send(messages)  # a resend after a failure is deduplicated
        await s.send(
            [OutMessage(payload=b'{"x": 1}', key="alpha", attributes={"MessageGroupId": "g9"})]
        )
    got = await receive_all(sqs_client, queue, 16)
    assert await depth(sqs_client, queue) == 0
    per_group: dict[str, list[int]] = {}
    for m in got:
        body = json.loads(m["Body"])
        group = m["Attributes"]["MessageGroupId"]
        if group == "g9":
            assert body == {"x": 1}
            continue
        assert group == (body["key"] or "default")
        key = (body["key"] or "").encode()
        expected = hashlib.sha256(key + b"\0" + m["Body"].encode()).hexdigest()
        assert m["Attributes"]["MessageDeduplicationId"] == expected
        per_group.setdefault(group, []).append(body["i"])
    assert per_group == {
        "alpha": [0, 1, 2, 3, 4],
        "beta": [0, 1, 2, 3, 4],
        "default": [0, 1, 2, 3, 4],
    }


async def test_large_messages_are_split_by_batch_size_limit(
    moto: MotoServer, sqs_client: Any
) -> None:
    queue = moto.create_queue()
    # 10 of these exceed even the 1 MiB SendMessageBatch limit, so chunks must split by size.
    payload = json.dumps({"pad": "x" * 110_000}).encode()
    async with sink(moto, queue.name) as s:
        await s.send([OutMessage(payload=payload) for _ in range(12)])
    got = await receive_all(sqs_client, queue, 12)
    assert [m["Body"].encode() for m in got] == [payload] * 12


async def test_missing_queue_is_rejected_naming_it(moto: MotoServer) -> None:
    async with sink(moto, "no-such-sink-queue") as s:
        with pytest.raises(SinkRejected, match="no-such-sink-queue"):
            await s.send([OutMessage(payload=b"{}")])


async def test_non_utf8_payload_is_rejected(moto: MotoServer) -> None:
    queue = moto.create_queue()
    async with sink(moto, queue.name) as s:
        with pytest.raises(SinkRejected, match="UTF-8"):
            await s.send([OutMessage(payload=b"\xff\xfe")])


async def test_server_down_is_unavailable_then_recovers(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue()
    async with sink(moto, queue.name) as s:
        await s.send([OutMessage(payload=b'"first"')])  # resolves and caches the URL
        moto.stop()
        try:
            with anyio.fail_after(10), pytest.raises(SinkUnavailable):
                await s.send([OutMessage(payload=b'"lost?"')])
        finally:
            moto.start()
        moto.create_queue(name=queue.name)
        await s.send([OutMessage(payload=b'"second"')])
    got = await receive_all(sqs_client, queue, 1)
    assert [m["Body"] for m in got] == ['"second"']


def sink_with(target: str, connection: Any) -> SqsSink:
    return create(SinkSpec(url=f"sqs:{target}", kind="sqs", target=target, connection=connection))


async def test_queue_url_as_the_target(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue()
    async with sink_with(queue.url, moto.connection) as s:
        await s.send([OutMessage(payload=b'"by-url"')])
    got = await receive_all(sqs_client, queue, 1)
    assert [m["Body"] for m in got] == ['"by-url"']


def test_target_without_a_queue_is_rejected(moto: MotoServer) -> None:
    with pytest.raises(SinkRejected, match="expected sqs:CONNECTION/QUEUE"):
        sink_with("main/", moto.connection)


async def test_no_region_anywhere_is_rejected_on_open(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    s = sink_with("main/some-queue", SimpleNamespace(endpoint_url=moto.endpoint_url))
    with pytest.raises(SinkRejected, match="no AWS region"):
        async with s:
            pass


async def test_message_over_the_queue_limit_is_rejected(moto: MotoServer, sqs_client: Any) -> None:
    queue = moto.create_queue(attributes={"MaximumMessageSize": "1024"})
    async with sink(moto, queue.name) as s:
        with pytest.raises(SinkRejected, match="SQS refused the messages") as info:
            await s.send([OutMessage(payload=b'"' + b"x" * 2000 + b'"')])
    assert not isinstance(info.value, SinkUnavailable)
    assert "1024" in str(info.value)
    assert await depth(sqs_client, queue) == 0


async def test_no_credentials_is_unavailable_naming_credentials(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    queue = moto.create_queue()
    connection = SimpleNamespace(endpoint_url=moto.endpoint_url, region="us-east-1")
    async with sink_with(f"main/{queue.name}", connection) as s:
        with anyio.fail_after(30), pytest.raises(SinkUnavailable, match="check credentials"):
            await s.send([OutMessage(payload=b"{}")])


async def test_send_outside_async_with(moto: MotoServer) -> None:
    s = sink(moto, "never-opened")
    await s.send([])  # nothing to send: nothing to complain about
    with pytest.raises(SinkUnavailable, match="outside 'async with'"):
        await s.send([OutMessage(payload=b"{}")])
